package security

import "testing"

// TestInvariant18DisabledClipboardAndFilesCarryNothing: a role's
// disable_clipboard and disable_file_transfer carry nothing, either way,
// through every path a browser session has (the terminal's file panel, the
// desktop's clipboard with its files), each case against the real machine:
// vm1's sshd, and vm2's GNOME Remote Desktop (the cases that need it skip
// without it). Native tunnels, which would carry files end to end, are
// refused for such roles: proxy TestTunnelFilesDisabledRefused.
func TestInvariant18DisabledClipboardAndFilesCarryNothing(t *testing.T) {
	t.Run("terminal files", invariant18SSHFiles)
	t.Run("desktop files", invariant18RDPFiles)
	t.Run("desktop clipboard", invariant18RDPClipboard)
}
