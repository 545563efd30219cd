package broker

// crashForTest stops the broker as a crash would: the writer stops
// committing, so no end record or delete reaches the disk, and the files
// are closed. Sessions still open end later without their records.
func (b *Broker) crashForTest() {
	b.Drain()
	b.finalOnce.Do(func() {
		b.stopAll()
		close(b.stop)
		<-b.swept
		b.audit.close()
	})
}
