package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// maxBody is the largest API request body: every body the API takes is a
// small object, so anything larger is a mistake or an attack.
const maxBody = 64 << 10

// readJSON decodes r's body, strictly, into v (a pointer to a struct): the
// one decoder of every API handler that takes a body, so every route
// refuses the same things the same way:
//
//   - a body that is not application/json (charset utf-8 allowed): 415
//   - a body over maxBody: 413
//   - not a single JSON object, a field v does not have, a value of the
//     wrong type, or anything after the object: 400, naming the field or
//     the byte offset
//   - no body: 400 if need, else v is left as it is
//
// Routes that take no body call it with need false and an empty struct, so
// "{}" and nothing pass, and anything else is refused like a bad field.
func readJSON(w http.ResponseWriter, r *http.Request, v any, need bool) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return apiErr(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body: over %d KiB", maxBody>>10))
		}
		return apiErr(http.StatusBadRequest, "bad_request", "request body: "+err.Error())
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if need {
			return apiErr(http.StatusBadRequest, "empty_body", "request body: empty; want a JSON object")
		}
		return nil
	}
	if err := checkJSONType(r.Header.Get("Content-Type")); err != nil {
		return err
	}
	return decodeJSON(b, v)
}

// checkJSONType accepts application/json with no parameter but an UTF-8
// charset, the only encoding JSON has (RFC 8259 §8.1).
func checkJSONType(ct string) error {
	if ct == "" {
		return apiErr(http.StatusUnsupportedMediaType, "bad_content_type", "no Content-Type; send application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return apiErr(http.StatusUnsupportedMediaType, "bad_content_type", fmt.Sprintf("Content-Type %q; send application/json", ct))
	}
	for k, val := range params {
		if k != "charset" || !strings.EqualFold(val, "utf-8") {
			return apiErr(http.StatusUnsupportedMediaType, "bad_content_type", fmt.Sprintf("Content-Type %q: only charset=utf-8 may follow application/json", ct))
		}
	}
	return nil
}

// decodeJSON decodes b, which must hold exactly one JSON object, into v,
// refusing fields v does not have. Its errors are 400s saying what is
// wrong and where.
func decodeJSON(b []byte, v any) error {
	bad := func(format string, args ...any) error {
		return apiErr(http.StatusBadRequest, "bad_request", "request body: "+fmt.Sprintf(format, args...))
	}
	// An object, not null, a number or a list: null would leave v as it
	// is, and so pass for an empty request.
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return bad("want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			syn *json.SyntaxError
			typ *json.UnmarshalTypeError
		)
		switch {
		case errors.As(err, &syn):
			return bad("invalid JSON at byte %d: %s", syn.Offset, syn.Error())
		case errors.As(err, &typ):
			return bad("field %q: want %s, not a JSON %s", typ.Field, typ.Type, typ.Value)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return bad("the JSON object is cut short")
		}
		// encoding/json has no error type for this one.
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return bad("unknown field %s", f)
		}
		return bad("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("data after the JSON object (at byte %d)", dec.InputOffset())
	}
	return nil
}

// noBody is readJSON for a route that takes no body: nothing, or "{}".
func noBody(w http.ResponseWriter, r *http.Request) error {
	return readJSON(w, r, &struct{}{}, false)
}
