//! The EXAMPLES sections of `--help` (and so of the man page), one per
//! subcommand. They follow the README's "by hand -> with fleet" table: each
//! starts from what the lab did by hand.

/// `fleet` itself.
pub(crate) const FLEET: &str = "\
Examples:
  fleet init                 write a commented fleet.yaml and a starter www/ here
  fleet up -d                start the lab's fleet (4 workers on 9002-9005, balancer on 127.0.0.1:44444)
  fleet status               from this or any subdirectory
  fleet bench -c 1,25,100    the lab's ApacheBench table against the balancer
  fleet down                 stop everything, leave nothing behind";

pub(crate) const UP: &str = "\
Examples:
  fleet up                              the lab, in the foreground (Ctrl-C stops it)
  fleet up -d --backends 4 --base-port 9002
                                        runserver.sh, detached (what bin/runserver.sh runs)
  fleet up --listen 8080                balancer on 127.0.0.1:8080 (a bare port means loopback)
  fleet up -f lab.yaml --www ./site     another config file and www directory
  fleet up --upstream lab-pc-2:9002     balance another machine's server beside the local ones
  fleet up --backends 0 --upstream 10.0.0.2:9002 --upstream 10.0.0.3:9002
                                        a balancer only, in front of two other hosts";

pub(crate) const STATUS: &str = "\
Examples:
  fleet status               one row per backend: pid, state, health, restarts, connections
  fleet status --json        the same as JSON, for scripts (exit 3: no fleet running)
  fleet status --watch       redrawn every second while `fleet bench` runs (q quits)
  cd src && fleet status     finds ../.fleet, as git finds .git";

pub(crate) const TOP: &str = "\
Examples:
  fleet top                  the live status view, like top(1): q, Esc or Ctrl-C quits
  fleet top | tee status.log one plain snapshot per second when not on a terminal";

pub(crate) const DOWN: &str = "\
Examples:
  fleet down                 what stopserver.sh did, and waits until every worker is gone
  fleet down --timeout 2     SIGKILL whatever has not exited 2 s after SIGTERM";

pub(crate) const RESTART: &str = "\
Examples:
  fleet restart              every backend, one at a time: drained, restarted, back in rotation
  fleet restart 9003         bring one back (also a `failed` one, also under restart.policy: never)
  fleet restart --all-at-once
                             all together (the balancer waits up to 500 ms for one to come up)";

pub(crate) const STOP: &str = "\
Examples:
  fleet stop 9003            take one out: drained, stopped, and kept stopped until `fleet start 9003`
  fleet stop 9003 9004       several at once";

pub(crate) const START: &str = "\
Examples:
  fleet start 9003           start a backend stopped by `fleet stop` (or a `failed` one)
  fleet start                every stopped or failed backend (a whole fleet starts with `fleet up`)";

pub(crate) const SCALE: &str = "\
Examples:
  fleet scale 8              grow onto the next free ports (all checked first; a busy one is named)
  fleet scale 2              shrink from the top, draining the backends removed";

pub(crate) const RELOAD: &str = "\
Examples:
  fleet reload               re-read fleet.yaml and apply what changed (printed key by key)
  kill -HUP $(cat .fleet/fleet.pid)
                             the same, for a detached fleet";

pub(crate) const UPGRADE: &str = "\
Examples:
  fleet upgrade                  run the fleet binary now on disk (e.g. after `cargo install`)
                                 as the new supervisor; not one request is refused
  fleet upgrade --exe ./fleet    hand over to another build of fleet

A new binary that does not start or take over changes nothing: the running
supervisor keeps serving and `fleet upgrade` exits 1 saying why.";

pub(crate) const SERVE: &str = "\
Examples:
  fleet serve --port 9002                one lab server: ./www, or the built-in page without it
  fleet serve --port 9002 --www ./site   serve another directory
  fleet serve --port 9002 --bind 0.0.0.0 reachable from other machines (an upstream of another fleet)";

pub(crate) const LOGS: &str = "\
Examples:
  fleet logs                 the supervisor's events and the backends' output, merged by time
  fleet logs -f 9003         follow one backend's output and the supervisor's events about it
  fleet logs --since 5m      only the last five minutes
  fleet logs --no-prefix     without the [supervisor] / [port] tags";

pub(crate) const BENCH: &str = "\
Examples:
  fleet bench                                  ab -n 1000 -c C for the lab's C, against the fleet's /page.html
  fleet bench -n 200 -c 1,10                   a quick check
  fleet bench http://127.0.0.1:9002/page.html  one server alone, for comparison
  fleet bench --plot chart.svg                 requests/s and p99 against concurrency";

pub(crate) const INIT: &str = "\
Examples:
  mkdir lab && cd lab && fleet init && fleet up -d
  fleet init                 refuses (and names them) if fleet.yaml or www/ exist
  fleet init --full          the fleet.yaml with every key explained at length";

pub(crate) const EXPORT: &str = "\
Examples:
  fleet export systemd -o units        fleet-backend@.service, fleet.service, fleet-balancer.service into ./units
  fleet export kubernetes > fleet.yaml.k8s && kubectl apply -f fleet.yaml.k8s
  fleet export kubernetes -o k8s --image registry.example/fleet:1";

pub(crate) const COMPLETIONS: &str = "\
Examples:
  fleet completions bash > ~/.local/share/bash-completion/completions/fleet
  fleet completions zsh > \"${fpath[1]}/_fleet\"
  fleet completions fish > ~/.config/fish/completions/fleet.fish";

pub(crate) const MAN: &str = "\
Examples:
  fleet man | man -l -                 read it now
  fleet man -o ~/.local/share/man/man1 install fleet.1 and one page per subcommand";
