// Package adminclient is the client of bastiond's admin socket: HTTP over
// a unix socket, with the JSON of package api/admin. bastionctl's admin
// commands use it; the server is daemon/adminapi, which the client does not
// import (a client links no server code).
package adminclient
