// Command bastiond is the bastion daemon. It is meant to run under systemd
// (bastiond.service with bastiond.socket); see the README.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/bastiond/bastiond/daemon"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/version"
)

// options are the command line's values.
type options struct {
	configFile  string
	checkConfig bool
	showVersion bool
	cleanup     bool
}

// newFlags is bastiond's command line, filling o. The man page is generated
// from it (gendocs.go), so a flag documented here is documented there.
func newFlags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("bastiond", flag.ExitOnError)
	fs.StringVar(&o.configFile, "config", config.DefaultFile, "configuration `file`")
	fs.BoolVar(&o.checkConfig, "check-config", false, "check the configuration file and this host against it, then exit (0 when good)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&o.cleanup, "cleanup", false, "remove bastiond's nftables tables and exit (the firewall otherwise stays closed when the daemon stops)")
	return fs
}

func main() {
	var o options
	fs := newFlags(&o)
	fs.Parse(os.Args[1:]) // ExitOnError
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bastiond: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}

	switch {
	case o.showVersion:
		fmt.Println("bastiond", version.Version)
	case o.cleanup:
		if err := daemon.Cleanup(); err != nil {
			fmt.Fprintln(os.Stderr, "bastiond:", err)
			os.Exit(1)
		}
		fmt.Println("bastiond: firewall tables removed")
	case o.checkConfig:
		cfg, err := daemon.CheckConfig(o.configFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s: configuration is valid (sha256 %s, %d targets)\n", cfg.File, cfg.Digest, len(cfg.Inventory.Targets))
	default:
		if err := daemon.Run(context.Background(), daemon.Config{ConfigFile: o.configFile}); err != nil {
			fmt.Fprintln(os.Stderr, "bastiond:", err)
			os.Exit(1)
		}
	}
}
