// Package hooked holds the hooks that TestFindHooks must find.
package hooked

import "time"

// Period is changed by another package's test.
var Period = time.Second
var retryForTest = time.Second

var (
	retry  = time.Second
	limits = map[string]int{}
	count  int
	open   = func() {}
	fine   = 3 // read by tests, never changed
)
