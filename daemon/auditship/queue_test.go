package auditship

import (
	"fmt"
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	q := newQueue(5)
	line := func(i int) []byte { return []byte(fmt.Sprint(i)) }
	for i := range 4 {
		q.push([][]byte{line(i)})
	}
	last, got := q.take(3, 1<<20)
	if len(got) != 3 || last != 2 {
		t.Fatalf("take: %q, last %d", got, last)
	}
	q.wrote(last, 100, time.Unix(1, 0))
	if d, u, _ := q.stats(); d != 4 || u != 1 {
		t.Fatalf("depth %d unsent %d", d, u)
	}
	// Three more: the queue holds 5, so the two oldest (sent) go.
	q.push([][]byte{line(4), line(5), line(6)})
	if d, u, dropped := q.stats(); d != 5 || u != 4 || dropped != 2 {
		t.Fatalf("after overflow: depth %d unsent %d dropped %d", d, u, dropped)
	}
	// Delivered: only what passes the test, from the front.
	if n := q.release(func(end int64, _ time.Time) bool { return end <= 100 }); n != 1 {
		t.Fatalf("released %d", n)
	}
	if _, got := q.take(10, 1<<20); string(got[0]) != "3" || len(got) != 4 {
		t.Fatalf("unsent after release: %q", got)
	}
	// A broken connection: everything sent is unsent again.
	last, _ = q.take(2, 1<<20)
	q.wrote(last, 200, time.Now())
	if n := q.rewind(); n != 2 {
		t.Fatalf("rewound %d", n)
	}
	if _, got := q.take(10, 1<<20); len(got) != 4 || string(got[0]) != "3" {
		t.Fatalf("after rewind: %q", got)
	}
	// Byte bound, but always one line.
	if _, got := q.take(10, 1); len(got) != 1 {
		t.Fatalf("byte bound: %d lines", len(got))
	}
}
