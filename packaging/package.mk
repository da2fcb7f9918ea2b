# Packages: `make package` builds dist/haagent-$(VERSION).x86_64.rpm and
# dist/haagent_$(VERSION)-$(RELEASE)_amd64.deb from nfpm.yaml; `make repo` makes
# dist/repo a yum/dnf repository of the rpms in dist/. Included by the Makefile, which
# defines VERSION, BIN, MAN_DIR and the build and man targets. Every variable can be
# overridden on the command line, e.g.
#   make package VERSION=0.1.0.1 BIN=/tmp/x/haagent DIST=/tmp/x/dist
ifndef HAAGENT_PACKAGE_MK
HAAGENT_PACKAGE_MK := 1

# v2.48.0 or newer: older nfpm (rpmpack) wrote the rpm payload's file names as absolute
# paths, so `rpm2cpio x.rpm | cpio -id` as root unpacked into / (goreleaser/nfpm#1122);
# since v2.48.0 they are ./usr/bin/haagent, as rpmbuild writes them.
NFPM_VERSION ?= v2.48.0
# nfpm is installed once per version into a cache dir outside the repo.
NFPM_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/haagent/nfpm-$(NFPM_VERSION)
NFPM ?= $(NFPM_DIR)/nfpm
DIST ?= dist
# The package release (rpm Release, the deb's Debian revision).
RELEASE ?= 1
RPM := $(DIST)/haagent-$(VERSION).x86_64.rpm
DEB := $(DIST)/haagent_$(VERSION)-$(RELEASE)_amd64.deb
# Set RPM_SIGNING_KEY to an armored OpenPGP secret key file to sign the rpm (its
# passphrase, if any, in NFPM_RPM_PASSPHRASE).
RPM_SIGNING_KEY ?=
NFPM_ENV = VERSION=$(VERSION) RELEASE=$(RELEASE) HAAGENT_BIN=$(BIN) HAAGENT_MAN=$(MAN_DIR) RPM_SIGNING_KEY=$(RPM_SIGNING_KEY)

.PHONY: package repo

$(NFPM):
	GOBIN=$(NFPM_DIR) CGO_ENABLED=0 go install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

package: man $(NFPM)
	mkdir -p $(DIST)
	$(NFPM_ENV) $(NFPM) pkg --config nfpm.yaml --packager rpm --target $(RPM)
	$(NFPM_ENV) $(NFPM) pkg --config nfpm.yaml --packager deb --target $(DEB)

# Every rpm in dist/ goes into the repo, so that a newer build is an upgrade of an older one.
repo: package
	@command -v createrepo_c >/dev/null || { echo "repo: createrepo_c is missing (Debian package createrepo-c; scripts/deps.sh installs it)" >&2; exit 1; }
	mkdir -p $(DIST)/repo
	cp -p $(DIST)/*.rpm $(DIST)/repo/
	createrepo_c --quiet $(DIST)/repo

endif
