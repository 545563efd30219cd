package broker

// crashForTest stops the broker as a crash would: no end records, no
// deletes, the files closed.
func (b *Broker) crashForTest() {
	close(b.stop)
	<-b.swept
	// Drain the writer without committing anything more.
	b.audit.f.Close()
	b.audit.close()
	b.closeOnce.Do(func() {})
	for _, s := range b.list() {
		s.target.Close()
	}
}
