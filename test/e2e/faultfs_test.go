package e2e

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// faultFS is a FUSE loopback of a directory whose writes can be made to
// fail as those of a file system gone read-only do: write(2) on a file the
// daemon already holds open returns EROFS, as on ext4 remounted read-only
// after an error. A busy tmpfs cannot be remounted read-only (the kernel
// refuses while a file is open for writing), so the test needs a file
// system of its own to show that case.
type faultFS struct {
	readOnly atomic.Bool
}

// mountFaultFS mounts a faultFS of backing on mountpoint until the test
// ends.
func mountFaultFS(t testing.TB, backing, mountpoint string) (*faultFS, error) {
	ffs := &faultFS{}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, err
	}
	root := &fs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &faultNode{LoopbackNode: fs.LoopbackNode{RootData: r}, fs: ffs}
	}
	root.RootNode = root.NewNode(root, nil, "", &st)
	server, err := fs.Mount(mountpoint, root.RootNode, &fs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true, FsName: "faultfs", Name: "bastiond-test"}})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { server.Unmount() })
	return ffs, nil
}

// faultNode is a loopback file or directory whose open files are
// faultFiles.
type faultNode struct {
	fs.LoopbackNode
	fs *faultFS
}

func (n *faultNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.fs.readOnly.Load() && flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &faultFile{f: fh.(*fs.LoopbackFile), fs: n.fs}, fuseFlags, 0
}

func (n *faultNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.fs.readOnly.Load() {
		return nil, nil, 0, syscall.EROFS
	}
	inode, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return inode, &faultFile{f: fh.(*fs.LoopbackFile), fs: n.fs}, fuseFlags, 0
}

// faultFile is an open loopback file whose changes fail with EROFS while
// its file system is read-only. It does not offer the kernel a passthrough
// descriptor, so every write comes through it.
type faultFile struct {
	f  *fs.LoopbackFile
	fs *faultFS
}

var (
	_ fs.FileWriter    = (*faultFile)(nil)
	_ fs.FileSetattrer = (*faultFile)(nil)
)

func (f *faultFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if f.fs.readOnly.Load() {
		return 0, syscall.EROFS
	}
	return f.f.Write(ctx, data, off)
}

func (f *faultFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if f.fs.readOnly.Load() {
		return syscall.EROFS
	}
	return f.f.Fsync(ctx, flags)
}

func (f *faultFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if f.fs.readOnly.Load() {
		return syscall.EROFS
	}
	return f.f.Setattr(ctx, in, out)
}

func (f *faultFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if f.fs.readOnly.Load() {
		return syscall.EROFS
	}
	return f.f.Allocate(ctx, off, size, mode)
}

func (f *faultFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.f.Read(ctx, dest, off)
}

func (f *faultFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.f.Getattr(ctx, out)
}

func (f *faultFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.f.Lseek(ctx, off, whence)
}

func (f *faultFile) Flush(ctx context.Context) syscall.Errno   { return f.f.Flush(ctx) }
func (f *faultFile) Release(ctx context.Context) syscall.Errno { return f.f.Release(ctx) }
