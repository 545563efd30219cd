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

func main() {
	configFile := flag.String("config", config.DefaultFile, "configuration `file`")
	checkConfig := flag.Bool("check-config", false, "check the configuration file and this host against it, then exit (0 when good)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	cleanup := flag.Bool("cleanup", false, "remove bastiond's nftables tables and exit (the firewall otherwise stays closed when the daemon stops)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bastiond: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}

	switch {
	case *showVersion:
		fmt.Println("bastiond", version.Version)
	case *cleanup:
		if err := daemon.Cleanup(); err != nil {
			fmt.Fprintln(os.Stderr, "bastiond:", err)
			os.Exit(1)
		}
		fmt.Println("bastiond: firewall tables removed")
	case *checkConfig:
		cfg, err := daemon.CheckConfig(*configFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s: configuration is valid (sha256 %s, %d targets)\n", cfg.File, cfg.Digest, len(cfg.Inventory.Targets))
	default:
		if err := daemon.Run(context.Background(), daemon.Config{ConfigFile: *configFile}); err != nil {
			fmt.Fprintln(os.Stderr, "bastiond:", err)
			os.Exit(1)
		}
	}
}
