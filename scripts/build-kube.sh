#!/usr/bin/env bash
# Builds real, static Kubernetes and flannel binaries from the Go module proxy and caches
# them OUTSIDE the repo. Idempotent: a binary that already exists and reports the right
# version is not rebuilt. Prints the kube bin dir on the last line of stdout.
#
#   scripts/build-kube.sh            # build everything that is missing
#   scripts/build-kube.sh kubectl    # build only the named binaries (flanneld included)
#   scripts/build-kube.sh conformance # only e2e.test, ginkgo and the test images' programs
#
# Layout (CACHE=${HAAGENT_KUBE_CACHE:-/var/cache/haagent/kube}):
#   $CACHE/v1.37.2/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl,kubelet,kube-proxy}
#   $CACHE/v1.37.2/src/                 scratch module (go.mod/go.sum) for the kube build
#   $CACHE/flannel-v0.28.10/bin/flanneld
#   $CACHE/flannel-v0.28.10/src/        scratch module with the generated main.go
#   $CACHE/containerd-v2.4.2/bin/{containerd,ctr,containerd-shim-runc-v2}
#   $CACHE/coredns-v1.14.6/bin/coredns   the cluster DNS add-on's binary (its image is made from it)
#   $CACHE/coredns-v1.14.6/src/          scratch module for the CoreDNS build
#   $CACHE/v1.37.2/conformance/{e2e.test,ginkgo,agnhost,nnp,sample-apiserver}  Kubernetes'
#                                       conformance suite, its runner and its test images' programs
#   $CACHE/build-times.log              one line per binary built
#
# Why a scratch module: k8s.io/kubernetes' go.mod replaces every staging module with a
# ./staging path, so `go install` refuses it; we require it from a module of our own that
# maps each staging module to its published v0.X.Y tag. flannel's main.go imports the
# tencentvpc backend, whose SDK zip the proxy refuses, and the udp backend, which needs
# cgo; we generate main.go without both. See /work/shared/notes/real-components.md.
set -euo pipefail

KUBE_VERSION=${HAAGENT_KUBE_VERSION:-v1.37.2}
FLANNEL_VERSION=${HAAGENT_FLANNEL_VERSION:-v0.28.10}
# containerd 2.x, which no Debian release ships yet: a minion's config must work with it too.
CONTAINERD_VERSION=${HAAGENT_CONTAINERD_VERSION:-v2.4.2}
# The CoreDNS that Kubernetes 1.37 ships (addons.CoreDNSVersion).
COREDNS_VERSION=${HAAGENT_COREDNS_VERSION:-v1.14.6}
CACHE=${HAAGENT_KUBE_CACHE:-/var/cache/haagent/kube}
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

KUBE_DIR=$CACHE/$KUBE_VERSION
FLANNEL_DIR=$CACHE/flannel-$FLANNEL_VERSION
CONTAINERD_DIR=$CACHE/containerd-$CONTAINERD_VERSION
COREDNS_DIR=$CACHE/coredns-$COREDNS_VERSION
TIMES_LOG=$CACHE/build-times.log

log() { printf 'build-kube: %s\n' "$*" >&2; }
die() { printf 'build-kube: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $KUBE_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "unexpected KUBE_VERSION $KUBE_VERSION"
KUBE_MINOR=${BASH_REMATCH[1]}
STAGING_VERSION=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]} # k8s.io/api etc. are tagged v0.X.Y

command -v go >/dev/null || { [[ -x /usr/local/go/bin/go ]] && PATH=/usr/local/go/bin:$PATH; } ||
	die "go not found in PATH or /usr/local/go/bin"
command -v go >/dev/null || die "go not found"

# Which binaries to consider.
want_kube=() want_flannel=0 want_containerd=0 want_coredns=0 want_conformance=0
if (($#)); then
	for b in "$@"; do
		case " ${KUBE_BINS[*]} " in
		*" $b "*) want_kube+=("$b") ;;
		*)
			case $b in
			flanneld) want_flannel=1 ;;
			containerd) want_containerd=1 ;;
			coredns) want_coredns=1 ;;
			conformance) want_conformance=1 ;;
			*) die "unknown binary '$b' (known: ${KUBE_BINS[*]} flanneld containerd coredns conformance)" ;;
			esac
			;;
		esac
	done
else
	want_kube=("${KUBE_BINS[@]}")
	want_flannel=1
	want_containerd=1
	want_coredns=1
	want_conformance=1
fi

mkdir -p "$KUBE_DIR/bin" "$KUBE_DIR/src" "$FLANNEL_DIR/bin" "$FLANNEL_DIR/src" "$CONTAINERD_DIR/bin" \
	"$COREDNS_DIR/bin" "$COREDNS_DIR/src" ||
	die "cannot create cache dirs under $CACHE"

# One build at a time per cache dir (2 cores; builds use GBs of RAM and GOCACHE).
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
	log "another build holds $CACHE/.lock; waiting"
	flock 9
fi

# version_ok BIN EXPECTED: the binary runs and reports EXPECTED.
version_ok() {
	local bin=$1 want=$2 out name=${1##*/}
	[[ -x $bin ]] || return 1
	case ${name%.tmp} in
	ctr) out=$(timeout 20 "$bin" --version 2>&1) || return 1 ;;
	containerd-shim-runc-v2) out=$(timeout 20 "$bin" -v 2>&1) || return 1 ;;
	coredns) out=$(timeout 20 "$bin" -version 2>&1) || return 1 ;;
	kubectl) out=$(timeout 20 "$bin" version --client 2>&1) || return 1 ;;
	ginkgo) out=$(timeout 20 "$bin" version 2>&1) || return 1 ;;
	*) out=$(timeout 20 "$bin" --version 2>&1) || return 1 ;;
	esac
	[[ $out == *"$want"* ]]
}

record_time() { # name seconds
	log "built $1 in ${2}s"
	printf '%s %s %s %ss\n' "$(date -u +%FT%TZ)" "$1" "$3" "$2" >>"$TIMES_LOG"
}

# ---------------------------------------------------------------- kubernetes
kube_module_ready=0
setup_kube_module() {
	((kube_module_ready)) && return 0
	local src=$KUBE_DIR/src info gomod staging t0=$SECONDS
	log "resolving k8s.io/kubernetes@$KUBE_VERSION"
	info=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION") ||
		die "go mod download k8s.io/kubernetes@$KUBE_VERSION failed"
	gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
	[[ -f $gomod ]] || die "no go.mod in download info for k8s.io/kubernetes@$KUBE_VERSION"
	# Staging modules = the "k8s.io/X => ./staging/src/k8s.io/X" replaces in kubernetes' go.mod.
	staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }
		/^replace / && $3 == "=>" && $4 ~ /^\.\/staging\// { print $2 }' "$gomod" |
		grep -vx -e k8s.io/sample-cli-plugin -e k8s.io/sample-controller | sort -u)
	[[ -n $staging ]] || die "found no staging replaces in $gomod"
	{
		echo "// Generated by scripts/build-kube.sh; scratch module to build k8s.io/kubernetes $KUBE_VERSION."
		echo "module haagent.local/kubebuild"
		echo
		echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
		echo
		echo "require k8s.io/kubernetes $KUBE_VERSION"
		echo
		echo "replace ("
		while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done <<<"$staging"
		echo ")"
	} >"$src/go.mod.new"
	# Keep go.mod (and the go.sum `go get` filled) if nothing changed.
	if ! cmp -s "$src/go.mod.new" "$src/go.mod.gen" 2>/dev/null || [[ ! -f $src/go.mod ]]; then
		cp "$src/go.mod.new" "$src/go.mod"
		cp "$src/go.mod.new" "$src/go.mod.gen"
		rm -f "$src/go.sum"
	fi
	rm -f "$src/go.mod.new"
	log "$(wc -l <<<"$staging") staging modules replaced with $STAGING_VERSION; go get the commands"
	local pkgs=() b
	for b in "${KUBE_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@$KUBE_VERSION"); done
	(cd "$src" && go get "${pkgs[@]}") >&2 || die "go get of kubernetes commands failed (see above)"
	log "kube module ready in $((SECONDS - t0))s"
	kube_module_ready=1
}

kube_ldflags() {
	local f="-s -w" p
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		f+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$KUBE_MINOR -X $p.gitTreeState=clean"
	done
	echo "$f"
}

build_kube() {
	local b=$1 out=$KUBE_DIR/bin/$1 t0
	if version_ok "$out" "$KUBE_VERSION"; then
		log "$b $KUBE_VERSION already built"
		return 0
	fi
	setup_kube_module
	log "building $b $KUBE_VERSION (CGO_ENABLED=0) ..."
	t0=$SECONDS
	(cd "$KUBE_DIR/src" && CGO_ENABLED=0 go build -p 2 -trimpath -ldflags "$(kube_ldflags)" \
		-o "$out.tmp" "k8s.io/kubernetes/cmd/$b") >&2 || { rm -f "$out.tmp"; die "go build of $b failed (see above)"; }
	version_ok "$out.tmp" "$KUBE_VERSION" || { rm -f "$out.tmp"; die "$b built but does not report $KUBE_VERSION"; }
	mv -f "$out.tmp" "$out"
	record_time "$b" $((SECONDS - t0)) "$KUBE_VERSION"
}

# ---------------------------------------------------------------- conformance
# e2e.test and the test images' programs come from the kubernetes module itself, so they build in the same
# scratch module (and GOCACHE) as the kube binaries; e2e.test also needs sample-apiserver,
# which is a staging module the commands never import. ginkgo is built at the version
# kubernetes' go.mod pins, outside the scratch module so that its CLI's own dependencies
# never move a kube binary's. A stamp file beside each binary names the kube version it
# was built from: e2e.test has no --version.
CONFORMANCE_DIR=$KUBE_DIR/conformance
# The test images' programs that live in the kubernetes module (or its staging modules),
# by the name they get in $CONFORMANCE_DIR.
declare -A CONFORMANCE_PROGRAMS=(
	[agnhost]=k8s.io/kubernetes/test/images/agnhost
	[nnp]=k8s.io/kubernetes/test/images/nonewprivs
	[sample-apiserver]=k8s.io/sample-apiserver
)
stamp_ok() { [[ -x $1 && -f $1.version && $(<"$1.version") == "$2" ]]; }

build_conformance() {
	local src=$KUBE_DIR/src dir=$CONFORMANCE_DIR t0 ginkgo_version
	mkdir -p "$dir"
	local need_get=0 b
	for b in e2e.test "${!CONFORMANCE_PROGRAMS[@]}"; do stamp_ok "$dir/$b" "$KUBE_VERSION" || need_get=1; done
	if ((need_get)); then
		setup_kube_module
		(cd "$src" && go get "k8s.io/kubernetes/test/e2e@$KUBE_VERSION" "k8s.io/kubernetes/test/images/agnhost@$KUBE_VERSION" \
			"k8s.io/sample-apiserver@$STAGING_VERSION") >&2 || die "go get of the e2e suite and agnhost failed (see above)"
	fi
	if stamp_ok "$dir/e2e.test" "$KUBE_VERSION"; then
		log "e2e.test $KUBE_VERSION already built"
	else
		log "building e2e.test $KUBE_VERSION (CGO_ENABLED=0; about 30 min cold on 2 cores) ..."
		t0=$SECONDS
		(cd "$src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go test -c -p 2 -trimpath -ldflags "$(kube_ldflags)" \
			-o "$dir/e2e.test.tmp" k8s.io/kubernetes/test/e2e) >&2 || { rm -f "$dir/e2e.test.tmp"; die "go test -c of e2e.test failed (see above)"; }
		mv -f "$dir/e2e.test.tmp" "$dir/e2e.test"
		echo "$KUBE_VERSION" >"$dir/e2e.test.version"
		record_time e2e.test $((SECONDS - t0)) "$KUBE_VERSION"
	fi
	local pkg
	for b in "${!CONFORMANCE_PROGRAMS[@]}"; do
		pkg=${CONFORMANCE_PROGRAMS[$b]}
		if stamp_ok "$dir/$b" "$KUBE_VERSION"; then
			log "$b from $KUBE_VERSION already built"
			continue
		fi
		log "building $b ($pkg) from $KUBE_VERSION (CGO_ENABLED=0) ..."
		t0=$SECONDS
		(cd "$src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -p 2 -trimpath -ldflags "$(kube_ldflags)" \
			-o "$dir/$b.tmp" "$pkg") >&2 || { rm -f "$dir/$b.tmp"; die "go build of $b failed (see above)"; }
		mv -f "$dir/$b.tmp" "$dir/$b"
		echo "$KUBE_VERSION" >"$dir/$b.version"
		record_time "$b" $((SECONDS - t0)) "$KUBE_VERSION"
	done
	ginkgo_version=$(cd "$src" && go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2) ||
		die "cannot find the ginkgo version kubernetes $KUBE_VERSION pins"
	if version_ok "$dir/ginkgo" "${ginkgo_version#v}"; then
		log "ginkgo $ginkgo_version already built"
	else
		log "building ginkgo $ginkgo_version ..."
		t0=$SECONDS
		(cd "$dir" && GOBIN="$dir/bin.tmp" CGO_ENABLED=0 go install -trimpath "github.com/onsi/ginkgo/v2/ginkgo@$ginkgo_version") >&2 ||
			die "go install of ginkgo $ginkgo_version failed (see above)"
		version_ok "$dir/bin.tmp/ginkgo" "${ginkgo_version#v}" || die "ginkgo built but does not report $ginkgo_version"
		mv -f "$dir/bin.tmp/ginkgo" "$dir/ginkgo"
		rmdir "$dir/bin.tmp" 2>/dev/null || true
		record_time ginkgo $((SECONDS - t0)) "$ginkgo_version"
	fi
}

# ---------------------------------------------------------------- flannel
build_flannel() {
	local src=$FLANNEL_DIR/src out=$FLANNEL_DIR/bin/flanneld info dir t0
	if version_ok "$out" "$FLANNEL_VERSION"; then
		log "flanneld $FLANNEL_VERSION already built"
		return 0
	fi
	log "resolving github.com/flannel-io/flannel@$FLANNEL_VERSION"
	t0=$SECONDS
	info=$(cd "$src" && go mod download -json "github.com/flannel-io/flannel@$FLANNEL_VERSION") ||
		die "go mod download github.com/flannel-io/flannel@$FLANNEL_VERSION failed"
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
	[[ -f $dir/main.go ]] || die "no main.go in $dir"
	# Drop the tencentvpc backend (SDK zip refused by the proxy) and the udp backend (cgo).
	{
		echo "// Code generated by scripts/build-kube.sh from github.com/flannel-io/flannel@$FLANNEL_VERSION/main.go. DO NOT EDIT."
		echo "// The tencentvpc and udp backend imports are removed."
		echo
		grep -vE '^[[:space:]]*_ "github.com/flannel-io/flannel/pkg/backend/(tencentvpc|udp)"[[:space:]]*$' "$dir/main.go"
	} >"$src/main.go"
	grep -qE 'backend/(tencentvpc|udp)"' "$src/main.go" && die "failed to strip backend imports from main.go"
	if [[ ! -f $src/go.mod ]] || ! grep -q "github.com/flannel-io/flannel $FLANNEL_VERSION" "$src/go.mod"; then
		rm -f "$src/go.mod" "$src/go.sum"
		cat >"$src/go.mod" <<-EOF
			// Generated by scripts/build-kube.sh; scratch module to build flanneld $FLANNEL_VERSION.
			module haagent.local/flanneldbuild

			go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')

			require github.com/flannel-io/flannel $FLANNEL_VERSION
		EOF
	fi
	(cd "$src" && go mod tidy) >&2 || die "go mod tidy for flanneld failed (see above)"
	grep -q "github.com/flannel-io/flannel $FLANNEL_VERSION" "$src/go.mod" ||
		die "go mod tidy changed the flannel version in $src/go.mod"
	log "flannel module ready in $((SECONDS - t0))s; building flanneld $FLANNEL_VERSION (CGO_ENABLED=0, no udp/tencentvpc backends) ..."
	(cd "$src" && CGO_ENABLED=0 go build -p 2 -trimpath \
		-ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
		-o "$out.tmp" .) >&2 || { rm -f "$out.tmp"; die "go build of flanneld failed (see above)"; }
	version_ok "$out.tmp" "$FLANNEL_VERSION" || { rm -f "$out.tmp"; die "flanneld built but does not report $FLANNEL_VERSION"; }
	mv -f "$out.tmp" "$out"
	record_time flanneld $((SECONDS - t0)) "$FLANNEL_VERSION"
}

# ---------------------------------------------------------------- containerd 2.x
build_containerd() {
	local b t0 want=${CONTAINERD_VERSION#v}
	# The runc shim too: containerd 2.x can't start Debian's 1.6 shim ("type with url ...
	# not found"), so a host that swaps in containerd 2.x needs both.
	for b in containerd ctr containerd-shim-runc-v2; do
		if version_ok "$CONTAINERD_DIR/bin/$b" "$want"; then
			log "$b $CONTAINERD_VERSION already built"
			continue
		fi
		log "building $b $CONTAINERD_VERSION (CGO_ENABLED=0, no btrfs/devmapper/zfs snapshotters) ..."
		t0=$SECONDS
		(cd "$CONTAINERD_DIR" && GOBIN="$CONTAINERD_DIR/bin.tmp" CGO_ENABLED=0 go install -trimpath \
			-tags no_btrfs,no_devmapper,no_zfs "github.com/containerd/containerd/v2/cmd/$b@$CONTAINERD_VERSION") >&2 ||
			die "go install of $b $CONTAINERD_VERSION failed (see above)"
		version_ok "$CONTAINERD_DIR/bin.tmp/$b" "$want" || die "$b built but does not report $want"
		mv -f "$CONTAINERD_DIR/bin.tmp/$b" "$CONTAINERD_DIR/bin/$b"
		rmdir "$CONTAINERD_DIR/bin.tmp" 2>/dev/null || true
		record_time "$b" $((SECONDS - t0)) "$CONTAINERD_VERSION"
	done
}

# ---------------------------------------------------------------- coredns
# CoreDNS's own module has no replace directives, but a scratch module of ours pins its
# go.sum beside the binary, as the kube build does.
build_coredns() {
	local src=$COREDNS_DIR/src out=$COREDNS_DIR/bin/coredns t0 want=${COREDNS_VERSION#v}
	if version_ok "$out" "CoreDNS-$want"; then
		log "coredns $COREDNS_VERSION already built"
		return 0
	fi
	t0=$SECONDS
	if [[ ! -f $src/go.mod ]] || ! grep -q "github.com/coredns/coredns $COREDNS_VERSION" "$src/go.mod"; then
		rm -f "$src/go.mod" "$src/go.sum"
		cat >"$src/go.mod" <<-EOF
			// Generated by scripts/build-kube.sh; scratch module to build CoreDNS $COREDNS_VERSION.
			module haagent.local/corednsbuild

			go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
		EOF
	fi
	(cd "$src" && go get "github.com/coredns/coredns@$COREDNS_VERSION") >&2 ||
		die "go get github.com/coredns/coredns@$COREDNS_VERSION failed (see above)"
	log "coredns module ready in $((SECONDS - t0))s; building coredns $COREDNS_VERSION (CGO_ENABLED=0) ..."
	(cd "$src" && CGO_ENABLED=0 go build -p 2 -trimpath -ldflags "-s -w" -o "$out.tmp" github.com/coredns/coredns) >&2 ||
		{ rm -f "$out.tmp"; die "go build of coredns failed (see above)"; }
	version_ok "$out.tmp" "CoreDNS-$want" || { rm -f "$out.tmp"; die "coredns built but does not report $want"; }
	mv -f "$out.tmp" "$out"
	record_time coredns $((SECONDS - t0)) "$COREDNS_VERSION"
}

# ---------------------------------------------------------------- main
T0=$SECONDS
# flanneld first: it is quick, and a test needing only it should not wait for kube.
((want_flannel)) && build_flannel
((want_containerd)) && build_containerd
((want_coredns)) && build_coredns
for b in "${want_kube[@]}"; do build_kube "$b"; done
((want_conformance)) && build_conformance
log "done in $((SECONDS - T0))s; kube bins in $KUBE_DIR/bin, flanneld in $FLANNEL_DIR/bin"
echo "$KUBE_DIR/bin"
