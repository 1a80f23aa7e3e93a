package rdpclient

import (
	"encoding/hex"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// sealPassword encrypts password for the current Windows user with DPAPI,
// as mstsc reads "password 51:b:" (hex of the sealed UTF-16LE text).
func sealPassword(password string) (string, error) {
	u, err := windows.UTF16FromString(password)
	if err != nil {
		return "", err
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&u[0])), 2*(len(u)-1))
	in := windows.DataBlob{Size: uint32(len(b)), Data: &b[0]}
	var out windows.DataBlob
	if err := windows.CryptProtectData(&in, nil, nil, 0, nil, windows.CRYPTPROTECT_UI_FORBIDDEN, &out); err != nil {
		return "", fmt.Errorf("seal the password with DPAPI: %w", err)
	}
	defer windows.LocalFree(windows.Handle(unsafe.Pointer(out.Data)))
	return strings.ToUpper(hex.EncodeToString(unsafe.Slice(out.Data, out.Size))), nil
}
