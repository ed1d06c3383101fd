# bash completion for shmlimit(1): subcommands, their options, segment
# names (the files of /dev/shm) and the policies of the segment on the line.
# Installed as /usr/share/bash-completion/completions/shmlimit.
# tests/cli/completion.sh checks it against `shmlimit --help`.

_shmlimit_segments() {
  local f
  for f in /dev/shm/*; do
    [[ -f "$f" ]] && printf '/%s\n' "${f##*/}"
  done
}

_shmlimit_policies() {
  # "name": "api" lines of `policy SEGMENT list --json` (read-only).
  shmlimit policy "$1" list --json 2>/dev/null |
    sed -n 's/^ *"name": "\([^"\\]*\)",*$/\1/p'
}

_shmlimit() {
  local cur prev words cword
  if declare -F _init_completion >/dev/null; then
    _init_completion || return
  else
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi

  local commands="create policy acquire stat dump check denials export import reset metrics exporter ls watch rm"
  local global="--allow-other-users --help --version"

  # The subcommand and the positional arguments typed after it.
  local cmd="" i
  local -a args=()
  for ((i = 1; i < cword; i++)); do
    case "${words[i]}" in
      -*) ;;
      *)
        if [[ -z "$cmd" ]]; then cmd="${words[i]}"; else args+=("${words[i]}"); fi
        ;;
    esac
  done

  if [[ -z "$cmd" ]]; then
    if [[ "$cur" == -* ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$global" -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
    fi
    return
  fi

  # Option values.
  case "$prev" in
    --algorithm)
      mapfile -t COMPREPLY < <(compgen -W "gcra token_bucket fixed_window sliding_window quiet_period leaky_bucket concurrency sliding_log" -- "$cur")
      return ;;
    --on-full) mapfile -t COMPREPLY < <(compgen -W "allow deny" -- "$cur"); return ;;
    --wait) mapfile -t COMPREPLY < <(compgen -W "exact drf" -- "$cur"); return ;;
    --by) mapfile -t COMPREPLY < <(compgen -W "usage denials" -- "$cur"); return ;;
    --slot-bytes) mapfile -t COMPREPLY < <(compgen -W "64 128 256" -- "$cur"); return ;;
    --config) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    --policy)
      [[ ${#args[@]} -ge 1 ]] && mapfile -t COMPREPLY < <(compgen -W "$(_shmlimit_policies "${args[0]}")" -- "$cur")
      return ;;
    --capacity|--mode|--max-probe|--log-entries|--burst|--cost|--top|--since|--interval|--count|--key|--key-prefix|--listen)
      return ;;
  esac

  local opts=""
  case "$cmd" in
    create) opts="--capacity --mode --slot-bytes --max-probe --log-entries --config --replace" ;;
    policy) opts="--algorithm --burst --wait --on-full --replace --json" ;;
    acquire) opts="--cost --peek --json" ;;
    stat) opts="--json" ;;
    dump) opts="--json --csv --policy --key-prefix --limited-only --top --by" ;;
    check) opts="--json --no-repair" ;;
    denials) opts="--since --json" ;;
    export) opts="--policy --key" ;;
    import) opts="--keep-existing --replace" ;;
    exporter) opts="--listen" ;;
    ls) opts="--json" ;;
    watch) opts="--interval --count" ;;
  esac
  if [[ "$cur" == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$opts --help --allow-other-users" -- "$cur")
    return
  fi

  local n=${#args[@]}
  case "$cmd" in
    ls) ;;
    metrics|exporter)
      mapfile -t COMPREPLY < <(compgen -W "$(_shmlimit_segments)" -- "$cur") ;;
    import)
      if ((n == 0)); then
        mapfile -t COMPREPLY < <(compgen -W "$(_shmlimit_segments)" -- "$cur")
      elif ((n == 1)); then
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
      fi ;;
    policy)
      if ((n == 0)); then
        mapfile -t COMPREPLY < <(compgen -W "$(_shmlimit_segments)" -- "$cur")
      elif ((n == 1)); then
        mapfile -t COMPREPLY < <(compgen -W "list $(_shmlimit_policies "${args[0]}")" -- "$cur")
      fi ;;
    acquire|reset)
      if ((n == 0)); then
        mapfile -t COMPREPLY < <(compgen -W "$(_shmlimit_segments)" -- "$cur")
      elif ((n == 1)); then
        mapfile -t COMPREPLY < <(compgen -W "$(_shmlimit_policies "${args[0]}")" -- "$cur")
      fi ;;
    create|stat|dump|check|denials|export|watch|rm)
      ((n == 0)) && mapfile -t COMPREPLY < <(compgen -W "$(_shmlimit_segments)" -- "$cur") ;;
  esac
}
complete -F _shmlimit shmlimit
