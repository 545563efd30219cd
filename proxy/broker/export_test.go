package broker

import (
	"io/fs"
	"sync"
	"testing"
)

// crashForTest stops the broker as a crash would: the writer stops
// committing, so no end record or delete reaches the disk, and the files
// are closed, the live journal without being removed: its lock is free for
// another broker's RecoverOrphans. Sessions still open end later without
// their records.
func (b *Broker) crashForTest() {
	b.Drain()
	b.finalOnce.Do(func() {
		b.stopAll()
		close(b.stop)
		<-b.swept
		b.audit.close()
		b.audit.db.Close()
	})
}

// auditFaults makes the audit files that brokers open fail, while told to,
// as a full, read-only or failing disk would.
type auditFaults struct {
	mu      sync.Mutex // guards the fields below
	write   error      // Write's error
	partial bool       // a failed Write writes all but its last 10 bytes first
	sync    error      // Sync's error; the bytes written stay in the file
	opens   int        // files opened
}

// injectAuditFaults wraps the audit files of the brokers New opens from now
// until the end of the test. Call it before the brokers are made, so that
// it is undone after they are closed.
func injectAuditFaults(t testing.TB) *auditFaults {
	faults := &auditFaults{}
	open := openAuditFile
	openAuditFile = func(path string) (auditFile, error) {
		f, err := open(path)
		if err != nil {
			return nil, err
		}
		faults.mu.Lock()
		faults.opens++
		faults.mu.Unlock()
		return faultyFile{auditFile: f, path: path, faults: faults}, nil
	}
	t.Cleanup(func() { openAuditFile = open })
	return faults
}

func (a *auditFaults) set(write error, partial bool, sync error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.write, a.partial, a.sync = write, partial, sync
}

func (a *auditFaults) opened() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.opens
}

type faultyFile struct {
	auditFile
	path   string
	faults *auditFaults
}

func (f faultyFile) Write(p []byte) (int, error) {
	f.faults.mu.Lock()
	err, partial := f.faults.write, f.faults.partial
	f.faults.mu.Unlock()
	if err == nil {
		return f.auditFile.Write(p)
	}
	n := 0
	if partial && len(p) > 10 {
		n, _ = f.auditFile.Write(p[:len(p)-10])
	}
	return n, &fs.PathError{Op: "write", Path: f.path, Err: err}
}

func (f faultyFile) Sync() error {
	f.faults.mu.Lock()
	err := f.faults.sync
	f.faults.mu.Unlock()
	if err != nil {
		return &fs.PathError{Op: "sync", Path: f.path, Err: err}
	}
	return f.auditFile.Sync()
}
