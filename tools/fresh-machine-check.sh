#!/usr/bin/env bash
# Runs the README's two commands, verbatim, the way a fresh machine with only Node 20 would: in a clone of this
# repository's current commit, with a fresh HOME and npm prefix, and a PATH where no pnpm is installed.
# Fails if either command fails, if command 1 does not end with generated text on stdout, or if the commands
# change tracked files (a stale lockfile, say). Network: the npm registry (pnpm and the dependencies).
#   tools/fresh-machine-check.sh                   the check (it runs the whole test suite: minutes)
#   tools/fresh-machine-check.sh --print-commands  only the two commands, as extracted from README.md
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

# The commands are the non-comment lines of README.md's first ```sh block; there must be exactly two.
mapfile -t commands < <(awk '/^```sh$/ { inside = 1; next } inside && /^```/ { exit } inside && NF && !/^#/' "$repo/README.md")
if [ "${#commands[@]}" -ne 2 ]; then
  echo "fresh-machine-check: expected 2 commands in the first \`\`\`sh block of $repo/README.md, found ${#commands[@]}" >&2
  exit 1
fi
if [ "${1:-}" = --print-commands ]; then
  printf '%s\n' "${commands[@]}"
  exit 0
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mexit-fresh.XXXXXX")"
# pnpm's store keeps files read-only; make them writable so the whole tree goes.
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sha="$(git -C "$repo" rev-parse HEAD)"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  echo "fresh-machine-check: uncommitted changes in $repo are not part of the check (it checks commit $sha)" >&2
fi
git clone --quiet "$repo" "$tmp/repo"
git -C "$tmp/repo" checkout --quiet --detach "$sha"

# PATH: the fresh npm prefix's bin first, then node's own directory and the system directories, each with any
# pnpm or pnpx left out (a directory holding one is replaced by a directory of links to everything else).
path="$tmp/npm-prefix/bin"
seen=:
for dir in "$(dirname "$(command -v node)")" /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  [ -d "$dir" ] || continue
  dir="$(realpath "$dir")"
  [[ "$seen" != *":$dir:"* ]] || continue
  seen="$seen$dir:"
  if [ -e "$dir/pnpm" ] || [ -e "$dir/pnpx" ]; then
    links="$tmp/path/${dir//\//_}"
    mkdir -p "$links"
    for file in "$dir"/*; do
      case "${file##*/}" in pnpm | pnpx) ;; *) ln -s "$file" "$links/" ;; esac
    done
    dir="$links"
  fi
  path="$path:$dir"
done

mkdir -p "$tmp/home" "$tmp/npm-prefix"
# Nothing from this session's environment but the machine's own settings: TLS trust, proxies, locale, TMPDIR.
fresh_env=(HOME="$tmp/home" PATH="$path" NPM_CONFIG_PREFIX="$tmp/npm-prefix" LANG="${LANG:-C.UTF-8}")
for name in TMPDIR TERM CI NODE_EXTRA_CA_CERTS SSL_CERT_FILE SSL_CERT_DIR http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!name:-}" ] && fresh_env+=("$name=${!name}")
done
in_clone() { (cd "$tmp/repo" && env -i "${fresh_env[@]}" bash -c "$1"); }

if in_clone 'command -v pnpm'; then
  echo 'fresh-machine-check: pnpm is still on the fresh PATH' >&2
  exit 1
fi

start=$SECONDS
for i in 0 1; do
  echo "fresh-machine-check: command $((i + 1)): ${commands[$i]}"
  if ! in_clone "${commands[$i]}" | tee "$tmp/stdout-$i"; then
    echo "fresh-machine-check: command $((i + 1)) failed" >&2
    exit 1
  fi
done

# Generated text: the last line of command 1's stdout is prose, not a build or install summary.
last="$(grep -v '^[[:space:]]*$' "$tmp/stdout-0" | tail -n 1 || true)"
words="$(grep -oE '[[:alpha:]]{2,}' <<<"$last" | wc -l || true)"
if [ "$words" -lt 8 ]; then
  echo "fresh-machine-check: command 1 did not end with generated text on stdout (last line: '$last')" >&2
  exit 1
fi

changed="$(git -C "$tmp/repo" status --porcelain --untracked-files=no)"
if [ -n "$changed" ]; then
  echo "fresh-machine-check: the README's commands changed tracked files:" >&2
  echo "$changed" >&2
  exit 1
fi
echo "fresh-machine-check: both README commands passed on a fresh clone of $sha in $((SECONDS - start)) s"
