// Command qssepeer behaves on the wire like the Go library github.com/snapp-incubator/qsse
// (v1.2.0, quic-go 0.29), so the Python SDK can be tested against a Go peer.
//
// It writes one JSON object per line on stdout for everything it sees, and, as a server,
// reads one JSON command per line on stdin:
//
//	qssepeer client -addr 127.0.0.1:4242 -topics a,b -token secret
//	  {"kind":"connected"}                   handshake done, offer sent
//	  {"kind":"event","topic":"a","data":"<base64>"}
//	  {"kind":"error","code":2,"data":{"topic":"b"}}
//	  {"kind":"closed","error":"..."}         then exit status 1, as Go's client log.Fatal()s
//
//	qssepeer server -listen 127.0.0.1:0 -topics a,b -token secret -deny b
//	  {"kind":"listening","address":"127.0.0.1:PORT"}
//	  {"kind":"subscribed","topic":"a"}       one per accepted topic of an offer
//	  {"kind":"rejected","token":"..."}        wrong token: closed with code 1
//	  stdin: {"publish":"a","data":"<base64>"} or {"publish":"a*","count":1000}
//	         (count: that many events whose payloads are "0", "1", ...)
//	  {"kind":"published","topic":"a*","count":1}
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/lucas-clemente/quic-go"
)

const alpn = "PROTOCOL_QUIC"

// Error codes of Go qsse.
const (
	codeNotAuthorized     = 1
	codeTopicNotAvailable = 2
)

// event is Go qsse's frame: one JSON object per line, data as base64.
type event struct {
	Topic string `json:"topic,omitempty"`
	Data  []byte `json:"data,omitempty"`
}

type qsseError struct {
	Code int            `json:"code"`
	Data map[string]any `json:"data"`
}

type offer struct {
	Token  string   `json:"token,omitempty"`
	Topics []string `json:"topics,omitempty"`
}

var stdout = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func report(fields map[string]any) {
	stdout.Lock()
	defer stdout.Unlock()
	_ = stdout.enc.Encode(fields)
}

func fail(err error) {
	report(map[string]any{"kind": "closed", "error": err.Error()})
	os.Exit(1)
}

func splitTopics(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: qssepeer client|server [flags]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := flags.String("addr", "127.0.0.1:4242", "client: server address")
	listen := flags.String("listen", "127.0.0.1:0", "server: address to listen on")
	topics := flags.String("topics", "", "comma-separated topics")
	token := flags.String("token", "", "client: token sent; server: token required (empty: any)")
	deny := flags.String("deny", "", "server: comma-separated topics the authorizer refuses")
	_ = flags.Parse(os.Args[2:])
	switch os.Args[1] {
	case "client":
		runClient(*addr, splitTopics(*topics), *token)
	case "server":
		runServer(*listen, splitTopics(*topics), *token, splitTopics(*deny))
	default:
		fmt.Fprintln(os.Stderr, "usage: qssepeer client|server [flags]")
		os.Exit(2)
	}
}

// runClient does what Go qsse's NewClient and its reader goroutine do.
func runClient(addr string, topics []string, token string) {
	tlsConf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}}
	// quic-go's defaults: DialAddr makes its own socket, hence zero-length connection IDs.
	conn, err := quic.DialAddr(addr, tlsConf, nil)
	if err != nil {
		fail(err)
	}
	stream, err := conn.OpenUniStream()
	if err != nil {
		fail(err)
	}
	raw, _ := json.Marshal(offer{Token: token, Topics: topics})
	if _, err := stream.Write(append(raw, '\n')); err != nil {
		fail(err)
	}
	_ = stream.Close()
	report(map[string]any{"kind": "connected"})
	incoming, err := conn.AcceptUniStream(context.Background())
	if err != nil {
		fail(err)
	}
	reader := bufio.NewReader(incoming)
	for {
		line, err := reader.ReadBytes('\n')
		if err != nil {
			if err == io.EOF {
				err = fmt.Errorf("the server ended its stream")
			}
			fail(err)
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			report(map[string]any{"kind": "malformed", "line": string(line)})
			continue
		}
		if ev.Topic == "error" {
			var e qsseError
			if err := json.Unmarshal(ev.Data, &e); err != nil {
				report(map[string]any{"kind": "malformed", "line": string(line)})
				continue
			}
			report(map[string]any{"kind": "error", "code": e.Code, "data": e.Data})
			continue
		}
		report(map[string]any{"kind": "event", "topic": ev.Topic, "data": ev.Data})
	}
}

// goCertificate is Go qsse's GetDefaultTLSConfig: a throw-away RSA-2048 self-signed
// certificate with zero NotBefore and NotAfter, so that no client can verify it.
func goCertificate() tls.Certificate {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	template := x509.Certificate{SerialNumber: big.NewInt(1)}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		panic(err)
	}
	return cert
}

type subscriber struct {
	sync.Mutex
	stream quic.SendStream
}

func (s *subscriber) write(ev event) {
	raw, _ := json.Marshal(ev)
	s.Lock()
	defer s.Unlock()
	_, _ = s.stream.Write(append(raw, '\n'))
}

type server struct {
	sync.Mutex
	declared []string
	token    string
	deny     map[string]bool
	subs     map[string][]*subscriber
}

func runServer(listen string, topics []string, token string, deny []string) {
	tlsConf := &tls.Config{Certificates: []tls.Certificate{goCertificate()}, NextProtos: []string{alpn}}
	listener, err := quic.ListenAddr(listen, tlsConf, nil)
	if err != nil {
		fail(err)
	}
	s := &server{declared: topics, token: token, deny: map[string]bool{}, subs: map[string][]*subscriber{}}
	for _, topic := range deny {
		s.deny[topic] = true
	}
	report(map[string]any{"kind": "listening", "address": listener.Addr().String()})
	go s.commands()
	for {
		conn, err := listener.Accept(context.Background())
		if err != nil {
			fail(err)
		}
		go s.accept(conn)
	}
}

// accept reads the offer and subscribes, as Go qsse's acceptor does.
func (s *server) accept(conn quic.Connection) {
	stream, err := conn.AcceptUniStream(context.Background())
	if err != nil {
		return
	}
	line, err := bufio.NewReader(stream).ReadBytes('\n')
	if err != nil {
		return
	}
	var o offer
	if err := json.Unmarshal(line, &o); err != nil {
		report(map[string]any{"kind": "malformed", "line": string(line)})
		return // Go qsse logs it and leaves the connection open and silent
	}
	if s.token != "" && o.Token != s.token {
		report(map[string]any{"kind": "rejected", "token": o.Token})
		_ = conn.CloseWithError(codeNotAuthorized, "not authorized")
		return
	}
	out, err := conn.OpenUniStream()
	if err != nil {
		return
	}
	sub := &subscriber{stream: out}
	for _, topic := range o.Topics {
		code := 0
		if !s.isDeclared(topic) {
			code = codeTopicNotAvailable
		} else if s.deny[topic] {
			code = codeNotAuthorized
		}
		if code != 0 {
			raw, _ := json.Marshal(qsseError{Code: code, Data: map[string]any{"topic": topic}})
			sub.write(event{Topic: "error", Data: raw})
			continue
		}
		s.Lock()
		s.subs[topic] = append(s.subs[topic], sub)
		s.Unlock()
		report(map[string]any{"kind": "subscribed", "topic": topic})
	}
}

func (s *server) isDeclared(topic string) bool {
	for _, declared := range s.declared {
		if declared == topic {
			return true
		}
	}
	return false
}

// publish delivers to the subscribers of every declared topic the pattern matches.
func (s *server) publish(pattern string, data []byte) {
	s.Lock()
	var targets []*subscriber
	var names []string
	for _, declared := range s.declared {
		if ok, _ := filepath.Match(pattern, declared); ok {
			for _, sub := range s.subs[declared] {
				targets = append(targets, sub)
				names = append(names, declared)
			}
		}
	}
	s.Unlock()
	for i, sub := range targets {
		sub.write(event{Topic: names[i], Data: data})
	}
}

func (s *server) commands() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 4<<20)
	for scanner.Scan() {
		var command struct {
			Publish string `json:"publish"`
			Data    []byte `json:"data"`
			Count   int    `json:"count"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &command); err != nil || command.Publish == "" {
			report(map[string]any{"kind": "bad-command", "line": scanner.Text()})
			continue
		}
		count := 1
		if command.Count > 0 {
			count = command.Count
		}
		for i := 0; i < count; i++ {
			data := command.Data
			if command.Count > 0 {
				data = []byte(strconv.Itoa(i))
			}
			s.publish(command.Publish, data)
		}
		report(map[string]any{"kind": "published", "topic": command.Publish, "count": count})
	}
	os.Exit(0) // stdin closed: the test is done with us
}
