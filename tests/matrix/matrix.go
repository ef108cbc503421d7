// One program of the compatibility matrix (tests/mapped_matrix.rs), built by
// build.sh as go-static and go-reexec (CGO_ENABLED=0, standard library only).
// The row is set at link time: -ldflags "-X main.row=NAME".
//
// It prints "matrix: row=ROW pid=PID argv=[ARGV...]", then runs its
// arguments as commands, left to right, as matrix.c does (threads, maps,
// exit N, wait, wait-raw; any other word is only part of argv), plus:
//
//	reexec  runs /proc/self/exe with the one argument "child", prints each
//	        line the child printed as "reexec: LINE", then "reexec: status=N"
//	reexec-as NAME
//	        the same, with argv[0] = NAME (the idiom of Docker's reexec
//	        package, which dispatches on argv[0])
//	child   prints "child: exe=" and what /proc/self/exe names
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var row = "unset"

const threadsN = 4
const tlsStart = 42

// threads does what matrix.c does with a __thread variable with a value
// that each goroutine, locked to an OS thread, starts from and adds to.
func threads() {
	var wg sync.WaitGroup
	results := make([]int64, threadsN)
	for i := 0; i < threadsN; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// A thread of its own, as a pthread would be.
			runtime.LockOSThread()
			local := int64(tlsStart)
			for k := int64(1); k <= 1000; k++ {
				local += int64(i+1) * k
			}
			results[i] = local
		}(i)
	}
	wg.Wait()
	var sum int64
	for _, r := range results {
		sum += r
	}
	fmt.Printf("threads: n=%d sum=%d main_tls=%d\n", threadsN, sum, tlsStart)
}

func maps() {
	fmt.Printf("text: %#x\n", reflect.ValueOf(main).Pointer())
	exe, _ := os.Readlink("/proc/self/exe")
	fmt.Printf("exe: %s\n", exe)
	if f, err := os.Open("/proc/self/maps"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fmt.Printf("maps: %s\n", s.Text())
		}
		f.Close()
	}
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "RssShmem:") {
			v := strings.TrimPrefix(line, "RssShmem:")
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			fmt.Printf("status: RssShmem: %d kB\n", kb)
		}
	}
}

func reexec(argv0 string) {
	cmd := exec.Command("/proc/self/exe", "child")
	cmd.Args[0] = argv0
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		fmt.Printf("reexec: %s\n", line)
	}
	code := 0
	if err != nil {
		code = -1
		if e, ok := err.(*exec.ExitError); ok {
			code = e.ExitCode()
		}
	}
	fmt.Printf("reexec: status=%d\n", code)
}

func main() {
	fmt.Printf("matrix: row=%s pid=%d argv=[%s]\n", row, os.Getpid(), strings.Join(os.Args, " "))
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "threads":
			threads()
		case "maps":
			maps()
		case "reexec":
			reexec("/proc/self/exe")
		case "reexec-as":
			if i+1 < len(args) {
				i++
				reexec(args[i])
			}
		case "child":
			exe, _ := os.Readlink("/proc/self/exe")
			fmt.Printf("child: exe=%s\n", exe)
		case "exit":
			if i+1 < len(args) {
				code, _ := strconv.Atoi(args[i+1])
				os.Exit(code)
			}
		case "wait", "wait-raw":
			if args[i] == "wait" {
				c := make(chan os.Signal, 1)
				signal.Notify(c, syscall.SIGTERM)
				fmt.Println("ready")
				<-c
				fmt.Println("got TERM")
				os.Exit(0)
			}
			fmt.Println("ready")
			// Not select{}: with no other goroutine the runtime calls that
			// a deadlock. A sleeping timer is not one.
			for {
				time.Sleep(time.Hour)
			}
		}
	}
}
