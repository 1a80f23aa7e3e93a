package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tryUnixGuard runs the attacks (and the allowed uses) the unix guard's
// tests need; see the package comment.
func tryUnixGuard(kind, rest string) error {
	switch kind {
	case "sendto":
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, []byte("airlock-probe"), 0, &unix.SockaddrUnix{Name: rest})
	case "via":
		link, target, _ := strings.Cut(rest, "=")
		if err := os.Symlink(target, link); err != nil {
			return err
		}
		return try("unix:" + link)
	case "selfunix":
		ln, err := net.Listen("unix", rest)
		if err != nil {
			return err
		}
		go acceptEcho(ln) // open until the probe exits
		return try("unix:" + rest)
	case "wait":
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Lstat(rest); err == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not appear", rest)
			}
			time.Sleep(10 * time.Millisecond)
		}
	case "vsock":
		// CID 2 is the host of a virtual machine.
		fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: 22})
	case "uevent":
		// uevent:READY listens for the kernel's device events, creates
		// READY, and waits up to 10 s for one: "reached" if one comes.
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
			return err
		}
		if err := os.WriteFile(rest, nil, 0o644); err != nil {
			return err
		}
		tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		buf := make([]byte, 4096)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("no uevent: %w", err)
		}
		fmt.Fprintf(os.Stderr, "uevent: %q\n", buf[:min(n, 80)])
		return nil
	case "iouring":
		var params [120]byte
		if _, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0); e != 0 {
			return e
		}
		return nil
	case "race":
		parts := strings.Split(rest, "|")
		if len(parts) != 3 {
			return fmt.Errorf("race: want GOOD|BAD|N")
		}
		n, err := strconv.Atoi(parts[2])
		if err != nil {
			return err
		}
		return race(parts[0], parts[1], n)
	}
	return fmt.Errorf("unknown kind %q", kind)
}

// race connects n times with one sockaddr in shared memory while another
// thread keeps rewriting it between good and bad. It fails (nil error:
// "reached") only if a connection's peer is bad.
func race(good, bad string, n int) error {
	sun := func(p string) []byte {
		b := make([]byte, 110)
		b[0] = unix.AF_UNIX
		copy(b[2:], p)
		return b
	}
	g, b := sun(good), sun(bad)
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_SHARED)
	if err != nil {
		return err
	}
	copy(buf, g)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				copy(buf, b)
			} else {
				copy(buf, g)
			}
		}
	}()
	var reachedBad, ok int
	for range n {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			close(stop)
			return err
		}
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), 110)
		if e == 0 {
			ok++
			if sa, err := unix.Getpeername(fd); err == nil {
				if u, isUnix := sa.(*unix.SockaddrUnix); isUnix && u.Name == bad {
					reachedBad++
				}
			}
		}
		unix.Close(fd)
	}
	close(stop)
	<-done
	if reachedBad > 0 {
		return nil
	}
	return errors.New("never reached " + bad + " in " + strconv.Itoa(n) + " tries (" + strconv.Itoa(ok) + " connected to " + good + ")")
}
