# Shared by scripts/run and scripts/test: install what is missing, idempotently and fast when nothing is.

VENV="${SENTRYCAM_VENV:-.venv}"

install_apt_packages() {
    local wanted missing=()
    wanted=$(grep -v '^\s*#' scripts/apt-packages.txt | xargs)
    for package in $wanted; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing system packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install ${missing[*]}" >&2
        return 1
    fi
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    # $1: the requirements file; reinstall only when a requirements file changed since the last install.
    local requirements="$1" stamp
    stamp=$(cat "$requirements" requirements*.txt services/*/requirements.txt | sha256sum | cut -c1-16)
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if [ "$(cat "$VENV/.sentrycam-stamp" 2>/dev/null)" != "$requirements:$stamp" ]; then
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -r "$requirements"
        echo "$requirements:$stamp" > "$VENV/.sentrycam-stamp"
    fi
}
