package gateway

import (
	"fmt"

	"github.com/airlock-hpc/airlock/internal/store"
)

var auditAll = store.AuditFilter{Limit: 100}

func fmtSscanf(ref string, pid *int, start *uint64) (int, error) {
	return fmt.Sscanf(ref, "pid:%d:%d", pid, start)
}
