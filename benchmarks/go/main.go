// Command benchgo is the proxy benchmarks' load generator and echo server (benchmarks/
// c_proxies.py builds and runs it). Written in Go so that neither is the bottleneck of a
// benchmark whose subject is a proxy: the Python client and echo server use more CPU per call
// than a C proxy does.
//
//	benchgo echo -port N [-stream-messages 10]
//	benchgo load -target HOST:PORT -method /bench.Echo/Unary [-concurrency 16 | -rate 1000] ...
//
// Both speak any method with opaque byte payloads (codec.go); "load" prints one JSON summary
// on stdout (see summary in loadgen.go).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchgo echo|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "echo":
		err = runEcho(os.Args[2:])
	case "load":
		err = runLoad(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (echo or load)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchgo:", err)
		os.Exit(1)
	}
}
