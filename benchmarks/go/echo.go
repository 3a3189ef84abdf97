package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/golang/protobuf/proto"
	dpb "github.com/golang/protobuf/protoc-gen-go/descriptor"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/reflection"
)

// The echo server answers /bench.Echo/Unary (the request back), /bench.Echo/Stream (the
// request back -stream-messages times) and any other method (every request message back, as
// a bidi stream would). Its server reflection describes bench.Echo, like benchmarks/proxy.py's
// Python echo server, so the sidecar forwards those two methods with their native shapes;
// other services are not described, so the sidecar forwards them as generic streams.

func runEcho(args []string) error {
	flags := flag.NewFlagSet("echo", flag.ExitOnError)
	port := flags.Int("port", 0, "port to listen on (127.0.0.1)")
	streamMessages := flags.Int("stream-messages", 10, "responses per /bench.Echo/Stream call")
	if err := flags.Parse(args); err != nil {
		return err
	}
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		return err
	}
	encoding.RegisterCodec(rawCodec{}) // replaces "proto": raw bytes, protobuf for reflection
	descriptor, err := echoDescriptor()
	if err != nil {
		return err
	}
	server := grpc.NewServer(grpc.UnknownServiceHandler(echoAll))
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "bench.Echo",
		HandlerType: (*interface{})(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: echoUnary}},
		Streams: []grpc.StreamDesc{{
			StreamName: "Stream", ServerStreams: true,
			Handler: func(_ interface{}, stream grpc.ServerStream) error {
				return echoStream(stream, *streamMessages)
			},
		}},
		Metadata: descriptor, // gzipped FileDescriptorProto: what reflection serves
	}, struct{}{})
	reflection.Register(server)
	return server.Serve(listener)
}

func echoUnary(_ interface{}, _ context.Context, decode func(interface{}) error,
	_ grpc.UnaryServerInterceptor) (interface{}, error) {
	var request []byte
	if err := decode(&request); err != nil {
		return nil, err
	}
	return &request, nil
}

func echoStream(stream grpc.ServerStream, messages int) error {
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	for i := 0; i < messages; i++ {
		if err := stream.SendMsg(&request); err != nil {
			return err
		}
	}
	return nil
}

func echoAll(_ interface{}, stream grpc.ServerStream) error {
	var message []byte
	for {
		if err := stream.RecvMsg(&message); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := stream.SendMsg(&message); err != nil {
			return err
		}
	}
}

// echoDescriptor is bench/echo.proto, gzipped as grpc-go's reflection expects it:
//
//	package bench;
//	message Bytes { bytes value = 1; }
//	service Echo { rpc Unary(Bytes) returns (Bytes); rpc Stream(Bytes) returns (stream Bytes); }
//
// The payloads are opaque bytes; the sidecar reads only the call shapes.
func echoDescriptor() ([]byte, error) {
	bytesType := ".bench.Bytes"
	file := &dpb.FileDescriptorProto{
		Name: proto.String("bench/echo.proto"), Package: proto.String("bench"),
		Syntax: proto.String("proto3"),
		MessageType: []*dpb.DescriptorProto{{
			Name: proto.String("Bytes"),
			Field: []*dpb.FieldDescriptorProto{{
				Name: proto.String("value"), Number: proto.Int32(1), JsonName: proto.String("value"),
				Label: dpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
				Type:  dpb.FieldDescriptorProto_TYPE_BYTES.Enum(),
			}},
		}},
		Service: []*dpb.ServiceDescriptorProto{{
			Name: proto.String("Echo"),
			Method: []*dpb.MethodDescriptorProto{
				{Name: proto.String("Unary"), InputType: &bytesType, OutputType: &bytesType},
				{Name: proto.String("Stream"), InputType: &bytesType, OutputType: &bytesType,
					ServerStreaming: proto.Bool(true)},
			},
		}},
	}
	raw, err := proto.Marshal(file)
	if err != nil {
		return nil, err
	}
	var zipped bytes.Buffer
	writer := gzip.NewWriter(&zipped)
	if _, err := writer.Write(raw); err != nil {
		return nil, err
	}
	if err := writer.Close(); err != nil {
		return nil, err
	}
	return zipped.Bytes(), nil
}
