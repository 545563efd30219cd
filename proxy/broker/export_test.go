package broker

import (
	"io/fs"
	"sync"
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

// auditFaults makes the audit files that brokers open through its tuning
// fail, while told to, as a full, read-only or failing disk would.
type auditFaults struct {
	mu      sync.Mutex // guards the fields below
	write   error      // Write's error
	partial bool       // a failed Write writes all but its last 10 bytes first
	sync    error      // Sync's error; the bytes written stay in the file
	opens   int        // files opened
}

// tuning is the tests' tuning (quick) with audit files that a's faults
// wrap: give it to the brokers that should see them.
func (a *auditFaults) tuning() tuning {
	tn := quick()
	tn.openAuditFile = a.open
	return tn
}

// open opens the audit file at path, wrapped in a's faults.
func (a *auditFaults) open(path string) (auditFile, error) {
	f, err := openAuditFile(path)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.opens++
	a.mu.Unlock()
	return faultyFile{auditFile: f, path: path, faults: a}, nil
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
