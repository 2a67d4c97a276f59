#!/usr/bin/env bash
# Validates every SMF manifest in smf/ against the illumos service_bundle DTD,
# as `svccfg validate` would check its structure, with xmllint.
#
#   SMF_DTD   the DTD; default ../shared/smf/service_bundle.dtd.1, relative
#             to the repository root (the repo is cloned with shared/ beside it)
#   CI        when set, a missing xmllint or DTD is a failure, not a skip
#
# Exits non-zero when a manifest is invalid.
set -euo pipefail
cd "$(dirname "$0")/.."

dtd=${SMF_DTD:-../shared/smf/service_bundle.dtd.1}
manifests=(smf/*.xml)
if [ ! -e "${manifests[0]}" ]; then
  echo "smf/validate.sh: no manifests in smf/" >&2
  exit 1
fi

skip() {
  if [ -n "${CI:-}" ]; then
    echo "smf/validate.sh: $1 (CI is set: failing)" >&2
    exit 1
  fi
  echo "smf/validate.sh: skipped: $1"
  exit 0
}

command -v xmllint >/dev/null 2>&1 ||
  skip "xmllint is not installed (Debian: apt-get install libxml2-utils)"

if [ ! -f "$dtd" ]; then
  # Still worth knowing that the manifests are well-formed XML.
  xmllint --nonet --noout "${manifests[@]}"
  skip "DTD $dtd not found (set SMF_DTD); manifests are well-formed but not validated"
fi

# --path lets the manifests' own DOCTYPE (the illumos path of the DTD) resolve
# to the DTD's directory, so xmllint does not warn that it cannot load it.
status=0
for manifest in "${manifests[@]}"; do
  if xmllint --nonet --noout --path "$(dirname "$dtd")" --dtdvalid "$dtd" "$manifest"; then
    echo "smf/validate.sh: $manifest is valid"
  else
    echo "smf/validate.sh: $manifest is NOT valid against $dtd" >&2
    status=1
  fi
done
exit $status
