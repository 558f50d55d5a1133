#!/bin/sh
# Entrypoint of the offline redis stand-in, with the public redis image's conventions:
# - a command that starts with a flag or a .conf file means `redis-server ...`;
# - protected mode is off by default (the public image is built that way: the container
#   network, not the bind address, is the boundary). A later --protected-mode yes wins.
set -e
case "$1" in
    -*|*.conf) set -- redis-server "$@" ;;
esac
case " $* " in
    *" -v "*|*" --version "*|*" -h "*|*" --help "*|*" --test-memory "*|*" --check-system "*) ;;
    " redis-server "*)
        shift
        case "$1" in
            *.conf) conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@" ;;
            *) set -- redis-server --protected-mode no "$@" ;;
        esac ;;
esac
exec "$@"
