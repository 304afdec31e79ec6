package router

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	"metaparticle/router/internal/pyjson"
)

// Role answers one serialised Payload request with the serialised reply (roles/__init__.Role).
type Role interface {
	Call(ctx context.Context, message []byte, deadline time.Time) ([]byte, *RoleError)
	Upstreams() []*Upstream
}

// makeUpstreams is roles.make_upstreams: `label` ("shard") names the groups in errors.
func makeUpstreams(cfg *Config, label string) ([]*Upstream, error) {
	var groups []*Upstream
	for i, target := range cfg.Upstreams {
		name := cfg.UpstreamNames[i]
		text, details := name, []detail{{"role", pyjson.Str(name)}}
		if label != "" {
			text = fmt.Sprintf("%s %d (%s)", label, i, name)
			details = []detail{{label, intV(i)}, {"role", pyjson.Str(name)}}
		}
		up, err := newUpstream(cfg, target, text, name, details)
		if err != nil {
			return nil, err
		}
		groups = append(groups, up)
	}
	return groups, nil
}

// BuildRole is roles.build_role for the router roles.
func BuildRole(cfg *Config) (Role, error) {
	if cfg.Role == "spread" {
		ups, err := makeUpstreams(cfg, "")
		if err != nil {
			return nil, err
		}
		return &spread{ups}, nil
	}
	ups, err := makeUpstreams(cfg, "shard")
	if err != nil {
		return nil, err
	}
	return &shard{cfg, ups}, nil
}

// spread sends each request to the next replica; the payload bytes travel unchanged.
type spread struct{ ups []*Upstream }

func (s *spread) Upstreams() []*Upstream { return s.ups }

func (s *spread) Call(ctx context.Context, message []byte, deadline time.Time) ([]byte, *RoleError) {
	return s.ups[0].Call(ctx, message, deadline)
}

// shard reads the request's key at the key path, picks its shard by jump hash and forwards the
// original bytes.
type shard struct {
	cfg *Config
	ups []*Upstream
}

func (s *shard) Upstreams() []*Upstream { return s.ups }

// ShardOf is the shard a serialised request goes to, or the error the Python router answers.
func ShardOf(message []byte, keyPath string, shards, maxBytes, maxDepth int) (int, *RoleError) {
	body, err := unwrap(message)
	if err != nil {
		return 0, err
	}
	request, err := decode(body, maxBytes, maxDepth)
	if err != nil {
		return 0, err
	}
	key, walked, ok := KeyAtPath(request, keyPath)
	if !ok {
		msg := fmt.Sprintf("request has no shard key field %s (key path %s)", pyjson.Repr(walked), pyjson.Repr(keyPath))
		return 0, newError(codes.InvalidArgument, msg).with("field", pyjson.Str(keyPath))
	}
	return ShardFor(key, shards), nil
}

func (s *shard) Call(ctx context.Context, message []byte, deadline time.Time) ([]byte, *RoleError) {
	i, err := ShardOf(message, s.cfg.KeyPath, len(s.ups), s.cfg.MaxRequestBytes, s.cfg.MaxJSONDepth)
	if err != nil {
		return nil, err
	}
	return s.ups[i].Call(ctx, message, deadline)
}
