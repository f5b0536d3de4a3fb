#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Every source file carries `SPDX-License-Identifier: BSD-2-Clause` (LICENSE)
# in its first lines, in the comment style of its type.
#   deploy/spdx.sh --check   list the files without it; exit 1 if any
#   deploy/spdx.sh --fix     add it to those files (after a #! line, or after
#                            the title line of a man page source)
# Files that cannot hold a comment (JSON, test corpora, debian/ data files)
# are left out; LICENSE and debian/copyright state the license themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
if [ "$mode" != --check ] && [ "$mode" != --fix ]; then
    echo "usage: deploy/spdx.sh --check | --fix" >&2
    exit 2
fi
tag='SPDX-License-Identifier: BSD-2-Clause'

# The comment line for a file, or nothing when the file type takes none.
comment_for() {
    case $1 in
    *.c | *.h) echo "/* $tag */" ;;
    *.md) echo "<!-- $tag -->" ;;
    *.scd) echo "; $tag" ;;
    *.sh | *.py | *.cmake | */CMakeLists.txt | CMakeLists.txt | *.yml | *.yaml | *.conf | \
        *.service | *.in | *.bash-completion | debian/rules | debian/*.postinst | \
        debian/*.postrm | debian/*.preinst | debian/*.prerm | .clang-format | .gitignore)
        echo "# $tag"
        ;;
    esac
}

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files --cached --others --exclude-standard | grep -v -E '^(build|data)')
else
    mapfile -t files < <(find . -type f -not -path './build*' -not -path './.git/*' | sed 's|^\./||')
fi

missing=()
for f in "${files[@]}"; do
    case $f in
    tests/fuzz/corpus/*) continue ;;
    esac
    [ -f "$f" ] || continue
    line=$(comment_for "$f")
    [ -n "$line" ] || continue
    head -n 5 "$f" | grep -q "$tag" || missing+=("$f")
done

if [ "$mode" = --check ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "spdx: ${#missing[@]} file(s) without '$tag' (deploy/spdx.sh --fix adds it):" >&2
        printf '  %s\n' "${missing[@]}" >&2
        exit 1
    fi
    echo "spdx: every source file has its license line"
    exit 0
fi

for f in "${missing[@]}"; do
    line=$(comment_for "$f")
    tmp=$(mktemp)
    first=$(head -n 1 "$f")
    if [[ $first == '#!'* ]] || [[ $f == *.scd ]]; then
        # After the interpreter line, or after a man page's title line,
        # which scdoc requires to come first.
        { printf '%s\n' "$first"; printf '%s\n' "$line"; tail -n +2 "$f"; } >"$tmp"
    else
        { printf '%s\n' "$line"; cat "$f"; } >"$tmp"
    fi
    chmod --reference="$f" "$tmp"
    mv "$tmp" "$f"
    echo "spdx: added to $f"
done
