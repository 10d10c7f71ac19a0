#!/bin/sh
# Best effort: installs MariaDB's server from Debian's packages so that the
# MySQL/MariaDB ML Metadata test can run. Never fails the build: where the
# server cannot be installed (not root, no apt-get, no package registry), the
# test is skipped and says why.
if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_mariadb: not root or no apt-get; the MariaDB test will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends mariadb-server >/dev/null 2>&1; then
    apt-get update >/dev/null 2>&1 &&
        apt-get install -y --no-install-recommends mariadb-server >/dev/null 2>&1 ||
        echo "install_mariadb: apt-get could not install mariadb-server; the MariaDB test will be skipped" >&2
fi
exit 0
