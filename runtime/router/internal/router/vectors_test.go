package router

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	"metaparticle/router/internal/pyjson"
)

// vectors is testdata/vectors.json, written by testdata/make_vectors.py from the Python runtime.
type vectors struct {
	MaxRequestBytes int `json:"max_request_bytes"`
	MaxJSONDepth    int `json:"max_json_depth"`
	JumpHash        []struct {
		Key     string `json:"key"`
		Buckets int    `json:"buckets"`
		Bucket  int    `json:"bucket"`
	} `json:"jump_hash"`
	KeyHash []struct {
		KeyJSON string         `json:"key_json"`
		Hash    string         `json:"hash"`
		Shards  map[string]int `json:"shards"`
	} `json:"key_hash"`
	Routing []struct {
		Name       string `json:"name"`
		MessageB64 string `json:"message_b64"`
		KeyPath    string `json:"key_path"`
		Shards     int    `json:"shards"`
		Expect     struct {
			Shard      *int   `json:"shard"`
			Code       string `json:"code"`
			HTTPStatus int    `json:"http_status"`
			Document   string `json:"document"`
		} `json:"expect"`
	} `json:"routing"`
	ServiceConfig []struct {
		Retries, Burst int
		Config         any
	} `json:"service_config"`
	Deadline []struct {
		LeftUS         int64 `json:"left_us"`
		AnswerWithinUS int64 `json:"answer_within_us"`
	} `json:"deadline"`
}

func loadVectors(t *testing.T) *vectors {
	raw, err := os.ReadFile("../../testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Routing) < 100 || len(v.KeyHash) < 20 || len(v.JumpHash) < 20 || len(v.ServiceConfig) == 0 || len(v.Deadline) == 0 {
		t.Fatalf("vectors.json holds too few cases: %d routing, %d key_hash, %d jump_hash, %d service_config, %d deadline",
			len(v.Routing), len(v.KeyHash), len(v.JumpHash), len(v.ServiceConfig), len(v.Deadline))
	}
	return &v
}

func TestJumpHashMatchesPython(t *testing.T) {
	for _, c := range loadVectors(t).JumpHash {
		key, _ := strconv.ParseUint(c.Key, 10, 64)
		if got := JumpHash(key, c.Buckets); got != c.Bucket {
			t.Errorf("jump_hash(%s, %d) = %d, Python says %d", c.Key, c.Buckets, got, c.Bucket)
		}
	}
}

func TestKeyHashMatchesPython(t *testing.T) {
	for _, c := range loadVectors(t).KeyHash {
		key, err := pyjson.Loads([]byte(c.KeyJSON))
		if err != nil {
			t.Fatalf("%s: %v", c.KeyJSON, err)
		}
		if got := strconv.FormatUint(KeyHash(key), 10); got != c.Hash {
			t.Errorf("key_hash(%s) = %s, Python says %s (hashed %q)", c.KeyJSON, got, c.Hash, pyjson.DumpsCompactSorted(key))
		}
		for n, want := range c.Shards {
			buckets, _ := strconv.Atoi(n)
			if got := ShardFor(key, buckets); got != want {
				t.Errorf("shard_for(%s, %d) = %d, Python says %d", c.KeyJSON, buckets, got, want)
			}
		}
	}
}

func TestRoutingMatchesPython(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.Routing {
		message, err := base64.StdEncoding.DecodeString(c.MessageB64)
		if err != nil {
			t.Fatal(err)
		}
		shard, rerr := ShardOf(message, c.KeyPath, c.Shards, v.MaxRequestBytes, v.MaxJSONDepth)
		switch {
		case c.Expect.Shard != nil && rerr != nil:
			t.Errorf("%s: Python routes to shard %d, Go refuses: %s", c.Name, *c.Expect.Shard, rerr.Document())
		case c.Expect.Shard != nil && shard != *c.Expect.Shard:
			t.Errorf("%s: Python routes to shard %d, Go to %d", c.Name, *c.Expect.Shard, shard)
		case c.Expect.Shard == nil && rerr == nil:
			t.Errorf("%s: Python refuses %s, Go routes to shard %d", c.Name, c.Expect.Document, shard)
		case c.Expect.Shard == nil:
			if codeNames[rerr.Code] != c.Expect.Code || rerr.HTTPStatus() != c.Expect.HTTPStatus || string(rerr.Document()) != c.Expect.Document {
				t.Errorf("%s:\n python %s %d %s\n go     %s %d %s", c.Name, c.Expect.Code, c.Expect.HTTPStatus, c.Expect.Document,
					codeNames[rerr.Code], rerr.HTTPStatus(), rerr.Document())
			}
		}
	}
}

func TestServiceConfigMatchesPython(t *testing.T) {
	for _, c := range loadVectors(t).ServiceConfig {
		var got any
		if err := json.Unmarshal([]byte(serviceConfig(c.Retries, c.Burst)), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.Config) {
			t.Errorf("service config for retries %d, burst %d:\n go     %v\n python %v", c.Retries, c.Burst, got, c.Config)
		}
	}
}

func TestDeadlineMarginMatchesPython(t *testing.T) {
	for _, c := range loadVectors(t).Deadline {
		if got := answerWithin(time.Duration(c.LeftUS) * time.Microsecond); got != time.Duration(c.AnswerWithinUS)*time.Microsecond {
			t.Errorf("a caller's deadline %d us away: go answers within %v, python %d us", c.LeftUS, got, c.AnswerWithinUS)
		}
	}
}
