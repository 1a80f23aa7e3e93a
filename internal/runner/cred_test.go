package runner_test

import (
	"syscall"

	"github.com/airlock-hpc/airlock/internal/realtest"
)

func credential(a *realtest.Account) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(a.UID), Gid: uint32(a.GID)}}
}
