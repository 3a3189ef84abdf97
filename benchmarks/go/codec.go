package main

import (
	"fmt"

	"github.com/golang/protobuf/proto"
)

// rawCodec lets the client and the echo server speak any gRPC method with opaque byte
// payloads, so neither needs generated protobuf code.
//
// Messages of type *[]byte go on the wire as they are; anything else (the server reflection
// service's messages) is marshalled as protobuf. Named "proto" so that it can replace a
// server's default codec (encoding.RegisterCodec) and the client's content-type stays the
// usual application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	switch m := v.(type) {
	case *[]byte:
		return *m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("codec: cannot marshal %T", v)
}

// Unmarshal copies data into a *[]byte (the transport reuses its buffer), or decodes a
// protobuf message.
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	switch m := v.(type) {
	case *[]byte:
		*m = append((*m)[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("codec: cannot unmarshal into %T", v)
}

func (rawCodec) Name() string { return "proto" }
