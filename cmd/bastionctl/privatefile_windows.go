package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// createPrivate creates (or truncates) the file at path so that only the
// user running bastionctl can read it: before anything is written, the
// file gets a protected access list (inheriting nothing from its folder)
// with one entry, full control for the user's own SID. Not even
// Administrators or SYSTEM are listed (an administrator can still take
// ownership, as on any system).
func createPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := ownerOnly(path); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("%s: restrict access to its owner: %w", path, err)
	}
	return f, nil
}

func ownerOnly(path string) error {
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return err
	}
	sd, err := windows.SecurityDescriptorFromString("D:P(A;;FA;;;" + u.User.Sid.String() + ")")
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
}
