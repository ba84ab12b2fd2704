# Sourced by the scripts (after they cd to the work tree's root); not run on its own.

# require_root ME WHY: unless running as root, says "ME: WHY: run it with sudo" and exits 1.
require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$1: $2: run it with sudo" >&2
        exit 1
    fi
}
