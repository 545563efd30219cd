// Package version holds the build's version string, set by the Makefile with
// -ldflags "-X github.com/bastiond/bastiond/internal/version.Version=...".
// It is shown to admins (bastionctl status, bastiond -version) and never to
// anonymous clients on port 443.
package version

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Version is the release or `git describe` of this build.
var Version = "dev"

// SourceDate is the date a build's generated files carry: the time in
// SOURCE_DATE_EPOCH (seconds since 1970, as reproducible builds set it,
// make package from the commit) when it is set, so that the same commit
// gives the same bytes; now otherwise.
func SourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now().UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}
