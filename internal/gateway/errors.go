package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/airlock-hpc/airlock/internal/store"
)

// apiError is an error with what the client may see: an HTTP status, a
// stable code and a message. Anything else becomes a 500 whose cause is
// only logged.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// cause is what went wrong behind a 5xx, for the log only.
	cause error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.Code + ": " + e.Message + ": " + e.cause.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *apiError) Unwrap() error { return e.cause }

// storeRetryAfter is the Retry-After, in seconds, of a store_unavailable
// answer: about the store's busy timeout, after which a lock another
// process held is usually gone.
const storeRetryAfter = "5"

// storeFault is the answer when the store could not say yes or no (busy,
// locked, unreachable) while deciding who someone is or what they may do:
// 503 "try again". It is never a 401, 403 or 404, because the credential or
// the object may be perfectly good; a false "revoked" or "not found" would
// log people out or make them think their session is gone. what names the
// lookup for the log.
func storeFault(what string, err error) error {
	return &apiError{Status: 503, Code: "store_unavailable",
		Message: "the gateway's store is busy or unreachable; try again in a few seconds",
		cause:   fmt.Errorf("store fault: %s: %w", what, err)}
}

func apiErr(status int, code, msg string) error {
	return &apiError{Status: status, Code: code, Message: msg}
}

// isStoreFault reports whether err is a storeFault.
func isStoreFault(err error) bool {
	ae, ok := errors.AsType[*apiError](err)
	return ok && ae.Code == "store_unavailable"
}

// asAPIError maps any error to what the client is told.
func asAPIError(err error) *apiError {
	if ae, ok := errors.AsType[*apiError](err); ok {
		return ae
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{Status: 404, Code: "not_found", Message: "not found"}
	case errors.Is(err, store.ErrConflict):
		return &apiError{Status: 409, Code: "conflict", Message: "the session changed state; reload and try again"}
	}
	return &apiError{Status: 500, Code: "internal", Message: "internal error; it has been logged"}
}

func writeErr(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if ae.Code == "store_unavailable" {
		w.Header().Set("Retry-After", storeRetryAfter)
	}
	w.WriteHeader(ae.Status)
	json.NewEncoder(w).Encode(map[string]any{"error": ae})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
