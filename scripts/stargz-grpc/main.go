// containerd-stargz-grpc for the tests: stargz-snapshotter 0.12 served to containerd as a proxy
// snapshotter, built from the library Debian packages (golang-github-containerd-stargz-
// snapshotter-dev) by `scripts/install --test`. Debian's stargz-snapshotter ships ctr-remote
// but not this daemon, and the library's own service package cannot be built there (its CRI
// keychain needs k8s.io/cri-api, which Debian does not package): this is its
// NewStargzSnapshotterService without the keychains. Flags as upstream's: --address, --config,
// --root; the config's [resolver] section names each registry's mirrors, as upstream's does.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots/overlay/overlayutils"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	fsconfig "github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	snbase "github.com/containerd/stargz-snapshotter/snapshot"
	rhttp "github.com/hashicorp/go-retryablehttp"
	"github.com/pelletier/go-toml"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock", "socket")
	configPath := flag.String("config", "/etc/containerd-stargz-grpc/config.toml", "config file")
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "root directory")
	flag.Parse()

	var config Config
	if tree, err := toml.LoadFile(*configPath); err == nil {
		if err := tree.Unmarshal(&config); err != nil {
			log.Fatalf("config %s: %v", *configPath, err)
		}
	} else if !os.IsNotExist(err) {
		log.Fatalf("config %s: %v", *configPath, err)
	}
	ctx := context.Background()
	hosts := registryHosts(config.Resolver)
	opq := layer.OverlayOpaqueTrusted
	if userxattr, _ := overlayutils.NeedsUserXAttr(filepath.Join(*root, "snapshotter")); userxattr {
		opq = layer.OverlayOpaqueUser
	}
	fs, err := stargzfs.NewFilesystem(filepath.Join(*root, "stargz"), config.Config,
		stargzfs.WithGetSources(source.FromDefaultLabels(hosts)), stargzfs.WithOverlayOpaqueType(opq))
	if err != nil {
		log.Fatalf("filesystem: %v", err)
	}
	sn, err := snbase.NewSnapshotter(ctx, filepath.Join(*root, "snapshotter"), fs, snbase.AsynchronousRemove)
	if err != nil {
		log.Fatalf("snapshotter: %v", err)
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*address)
	l, err := net.Listen("unix", *address)
	if err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		rpc.Stop()
	}()
	if err := rpc.Serve(l); err != nil {
		log.Fatal(err)
	}
	// Stopped: unmount the layers before exiting.
	if err := sn.Close(); err != nil {
		log.Fatalf("close: %v", err)
	}
}

// Config is containerd-stargz-grpc's config.toml: the filesystem's settings and [resolver]
// (service.Config without the keychains, whose CRI API Debian does not package).
type Config struct {
	fsconfig.Config
	Resolver ResolverConfig `toml:"resolver"`
}

// ResolverConfig is service/resolver.Config: mirrors per registry host.
type ResolverConfig struct {
	Host map[string]HostConfig `toml:"host"`
}

type HostConfig struct {
	Mirrors []MirrorConfig `toml:"mirrors"`
}

type MirrorConfig struct {
	Host              string `toml:"host"`
	Insecure          bool   `toml:"insecure"`
	RequestTimeoutSec int    `toml:"request_timeout_sec"`
}

// registryHosts is service/resolver.RegistryHostsFromConfig with no credentials: the mirrors
// in order, then the registry itself.
func registryHosts(cfg ResolverConfig) source.RegistryHosts {
	return func(ref reference.Spec) (hosts []docker.RegistryHost, _ error) {
		host := ref.Hostname()
		for _, h := range append(cfg.Host[host].Mirrors, MirrorConfig{Host: host}) {
			client := rhttp.NewClient()
			client.Logger = nil
			tr := client.StandardClient()
			switch {
			case h.RequestTimeoutSec == 0:
				tr.Timeout = 30 * time.Second
			case h.RequestTimeoutSec > 0:
				tr.Timeout = time.Duration(h.RequestTimeoutSec) * time.Second
			}
			rh := docker.RegistryHost{
				Client:       tr,
				Host:         h.Host,
				Scheme:       "https",
				Path:         "/v2",
				Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
				Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(tr)),
			}
			if localhost, _ := docker.MatchLocalhost(rh.Host); localhost || h.Insecure {
				rh.Scheme = "http"
			}
			if rh.Host == "docker.io" {
				rh.Host = "registry-1.docker.io"
			}
			hosts = append(hosts, rh)
		}
		return
	}
}
