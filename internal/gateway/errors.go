package gateway

import (
	"encoding/json"
	"errors"
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
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func apiErr(status int, code, msg string) error {
	return &apiError{Status: status, Code: code, Message: msg}
}

// asAPIError maps any error to what the client is told.
func asAPIError(err error) *apiError {
	if ae, ok := errors.AsType[*apiError](err); ok {
		return ae
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{404, "not_found", "not found"}
	case errors.Is(err, store.ErrConflict):
		return &apiError{409, "conflict", "the session changed state; reload and try again"}
	}
	return &apiError{500, "internal", "internal error; it has been logged"}
}

func writeErr(w http.ResponseWriter, err error) {
	ae := asAPIError(err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(ae.Status)
	json.NewEncoder(w).Encode(map[string]any{"error": ae})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
