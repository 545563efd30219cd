package broker

// NewLoopbackForTest is New with the dial guard's loopback rule lifted
// (tuning.allowLoopback), for the tests of package broker_test that relay
// to a sink on 127.0.0.1 or ::1. It exists only in this package's test
// binary.
func NewLoopbackForTest(cfg Config, opt Options) (*Broker, error) {
	opt.tuning.allowLoopback = true
	return New(cfg, opt)
}
