package netpolicy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNftNetlinkGolden records, in testdata/NAME.netlink, the transaction
// nft itself sends for testdata/NAME.nft, in the canonical form of
// nlcanon_test.go; TestApplyMessagesMatchNft holds Apply's messages to it
// without root. nft gets the text the way Apply replaces a table: "table x;
// delete table x" for each table, then the tables with their contents.
//
// nft runs twice, each time in a fresh namespace: with --debug=mnl it dumps
// the bytes of every message, which the canonical form is decoded from;
// with --debug=netlink it prints libnftnl's text of the same batch, which
// the decoder must reproduce (everything but what libnftnl leaves out), so
// a decoding error cannot make both sides of the comparison agree.
//
// With -update the goldens are rewritten from nft's output; otherwise the
// test fails when this nft sends something else than the goldens hold.
func TestNftNetlinkGolden(t *testing.T) {
	version := "unknown"
	if out, err := exec.Command("nft", "--version").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Compile(labInput(tc.edit))
			if err != nil {
				t.Fatal(err)
			}
			text, err := os.ReadFile(filepath.Join("testdata", tc.name+".nft"))
			if err != nil {
				t.Fatal(err)
			}
			var script strings.Builder
			for _, tb := range rs.Tables {
				fmt.Fprintf(&script, "table %s %s\ndelete table %s %s\n", tb.Family, tb.Name, tb.Family, tb.Name)
			}
			script.Write(text)
			file := filepath.Join(t.TempDir(), tc.name+".nft")
			if err := os.WriteFile(file, []byte(script.String()), 0o600); err != nil {
				t.Fatal(err)
			}

			ns, _ := testNetns(t)
			msgs, err := parseMnlDump(nft(t, ns, "--debug=mnl", "-f", file))
			if err != nil {
				t.Fatal(err)
			}
			tx := decodeBatch(msgs)
			if len(tx.problems) > 0 {
				t.Fatalf("nft's own transaction has problems:\n%s", strings.Join(tx.problems, "\n"))
			}
			ns, _ = testNetns(t)
			lib, err := parseNftDebug(nft(t, ns, "--debug=netlink", "-f", file))
			if err != nil {
				t.Fatalf("nft --debug=netlink: %v", err)
			}
			if got, want := tx.render(false), lib.render(false); got != want {
				t.Fatalf("decoding nft's messages disagrees with libnftnl's text of them (- libnftnl, + decoder):\n%s", lineDiff(want, got))
			}

			got := tx.render(true)
			golden := filepath.Join("testdata", tc.name+".netlink")
			if *update {
				header := fmt.Sprintf("# The nf_tables transaction `nft -f` sends for testdata/%s.nft, after\n"+
					"# \"table x; delete table x\" for each table. Canonical form: see nlcanon_test.go.\n"+
					"# Written by TestNftNetlinkGolden -update (as root) with %s.\n", tc.name, version)
				if err := os.WriteFile(golden, []byte(header+got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -run TestNftNetlinkGolden -update, as root, creates it)", err)
			}
			if w := stripComments(string(want)); got != w {
				t.Errorf("%s sends another transaction than %s holds (- golden, + nft); -update to accept:\n%s",
					version, golden, lineDiff(w, got))
			}
		})
	}
}
