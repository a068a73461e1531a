# hutch bash interpreter worker.
#
# Run by the agent as `bash --noprofile --norc /proc/self/fd/5` with fd 5 = this source (a
# sealed memfd; bash reads it through a descriptor of its own, so fd 5 is closed at once), fd 0
# = /dev/null, fds 1/2 = pipes the agent reads raw, fd 3 = control in (one JSON object per
# line), fd 4 = control out. The protocol is in crates/hutch-agent/workers/README.md.
#
# One persistent shell: each cell is sourced into it (`. /dev/fd/5` from a here-string), so
# variables, functions, options and `cd` persist, `declare` stays global and `return` ends the
# cell. fds 3/4 are closed for the cell's commands. SIGINT: the trap marks the execution
# interrupted and turns on a DEBUG trap (with extdebug) that makes every further command of the
# cell return, so the rest of the cell is skipped and the shell survives. The worker's own
# names start with `__hutch_`; it evaluates nothing but the decoded cell.

exec 5<&-
__hutch_busy=
__hutch_int=
__hutch_count=0
__hutch_flags=
__hutch_re_name='^[A-Za-z_][A-Za-z0-9_]*$'

# Reads one control line ($1) into __hutch_type, __hutch_id, __hutch_code and the env
# arrays __hutch_envk/__hutch_envv, in linear time (bash's ${x//a/b} is quadratic on long
# strings, and so are regex captures over them): the line is split on `"` once; a string
# continues into the next part while its part ends in an odd number of backslashes.
__hutch_parse() {
	local - IFS='"' n i=0 j k s tail key= pending= inenv= b
	set -f
	local -a p q
	p=($1"x")
	n=${#p[@]}
	__hutch_type= __hutch_id=null __hutch_code= __hutch_envk=() __hutch_envv=()
	while ((i < n - 1)); do
		j=$((i + 1))
		while ((j < n - 1)); do
			b=0
			while [[ ${p[j]:${#p[j]}-b-1:1} == '\' ]] && ((b < ${#p[j]})); do ((++b)); done
			((b % 2 == 1)) || break
			((++j))
		done
		if ((j > i + 1)); then
			q=("${p[@]:i+1:j-i-1}")
			printf -v s '%s"' "${q[@]%\\}"
			s+=${p[j]}
		else
			s=${p[j]}
		fi
		tail=${p[j+1]}
		if [[ $tail =~ ^[[:space:]]*: ]]; then
			key=$s
			pending=$s
			if [[ ! $inenv ]]; then
				if [[ $key == id && $tail =~ ^[[:space:]]*:[[:space:]]*(-?[0-9]+) ]]; then
					__hutch_id=${BASH_REMATCH[1]}
				elif [[ $key == envs && $tail =~ ^[[:space:]]*:[[:space:]]*[{] ]]; then
					[[ $tail =~ ^[[:space:]]*:[[:space:]]*[{][[:space:]]*[}] ]] || inenv=1
				fi
			fi
		else
			__hutch_unjson "$s"
			if [[ $inenv ]]; then
				__hutch_envk+=("$pending")
				__hutch_envv+=("$__hutch_s")
				[[ $tail == *'}'* ]] && inenv=
			else
				case $pending in
				type) __hutch_type=$__hutch_s ;;
				code) __hutch_code=$__hutch_s ;;
				esac
			fi
			pending=
		fi
		i=$((j + 1))
	done
}

# Escaped JSON string contents whose \" are already decoded ($1) → __hutch_s. printf %b
# decodes \\ \n \t \r \b \f \uXXXX; \/ is not a %b escape and is replaced first.
__hutch_unjson() {
	local s=$1
	[[ $s == *'\/'* ]] && s=${s//'\/'/\/}
	printf -v __hutch_s '%b' "$s"
}

__hutch_send() {
	printf '%s\n' "$1" >&4 || exit 1
}

__hutch_on_int() {
	[[ $__hutch_busy ]] || return 0
	__hutch_int=1
	shopt -s extdebug
	trap '__hutch_skip' DEBUG
}

# DEBUG trap while interrupted: 2 makes the current function or sourced cell return; only the
# worker's own `__hutch_after` runs.
__hutch_skip() {
	[[ $BASH_COMMAND == __hutch_after* || ${FUNCNAME[1]} == __hutch_after ]] && return 0
	return 2
}

__hutch_after() {
	__hutch_rc=$1
	__hutch_flags=$-
	set +euvx
	trap - DEBUG
	shopt -u extdebug
	__hutch_busy=
}

# Applies the envs of the parsed execute message, remembering the previous values.
__hutch_begin() {
	local k v i
	__hutch_ek=() __hutch_eo=() __hutch_es=() __hutch_ex=()
	for i in "${!__hutch_envk[@]}"; do
		k=${__hutch_envk[i]} v=${__hutch_envv[i]}
		[[ $k =~ $__hutch_re_name && $k != __hutch_* ]] || continue
		__hutch_ek+=("$k")
		if [[ -v $k ]]; then
			__hutch_es+=(1)
			__hutch_eo+=("${!k}")
			if [[ ${!k@a} == *x* ]]; then __hutch_ex+=(1); else __hutch_ex+=(0); fi
		else
			__hutch_es+=(0) __hutch_eo+=("") __hutch_ex+=(0)
		fi
		export "$k=$v" 2>/dev/null
	done
	((++__hutch_count))
	__hutch_int=
	__hutch_rc=0
	trap '__hutch_on_int' INT
	__hutch_busy=1
}

# Restores the envs and reports the end of the execution.
__hutch_finish() {
	local i k id=$__hutch_id
	for ((i = ${#__hutch_ek[@]} - 1; i >= 0; i--)); do
		k=${__hutch_ek[i]}
		if [[ ${__hutch_es[i]} == 1 ]]; then
			printf -v "$k" '%s' "${__hutch_eo[i]}" 2>/dev/null
			[[ ${__hutch_ex[i]} == 1 ]] || export -n "$k" 2>/dev/null
		else
			unset -v "$k" 2>/dev/null
		fi
	done
	if [[ $__hutch_int ]]; then
		__hutch_send '{"type":"error","id":'"$id"',"name":"KeyboardInterrupt","value":"interrupted","traceback":""}'
		__hutch_send '{"type":"done","id":'"$id"',"status":"interrupted","executionCount":'"$__hutch_count"'}'
	elif ((__hutch_rc != 0)); then
		__hutch_send '{"type":"error","id":'"$id"',"name":"ExitStatus","value":"exit status '"$__hutch_rc"'","traceback":""}'
		__hutch_send '{"type":"done","id":'"$id"',"status":"error","executionCount":'"$__hutch_count"'}'
	else
		__hutch_send '{"type":"done","id":'"$id"',"status":"ok","executionCount":'"$__hutch_count"'}'
	fi
}

trap '__hutch_on_int' INT
__hutch_send '{"type":"ready","language":"bash","kernel":"bash","pid":'"$$"'}'
while :; do
	if IFS= read -r -u 3 __hutch_line; then
		__hutch_parse "$__hutch_line"
		[[ $__hutch_type == execute ]] || continue
		__hutch_begin
		# The cell runs at the top level (not in a function), so `declare` stays global.
		[[ $__hutch_flags == *e* ]] && set -e
		[[ $__hutch_flags == *u* ]] && set -u
		[[ $__hutch_flags == *v* ]] && set -v
		__hutch_pre='exec 5<&-; '
		# xtrace is turned on inside the cell so the worker's own commands are not traced
		[[ $__hutch_flags == *x* ]] && __hutch_pre+='set -x; '
		# fd 5 is closed by the cell itself once `.` has read it (it reads the whole file first).
		. /dev/fd/5 5<<<"$__hutch_pre$__hutch_code" 3<&- 4>&-
		{ __hutch_after $?; } 2>/dev/null
		__hutch_finish
	else
		# > 128: read was interrupted by a signal; otherwise the agent closed the channel
		(($? > 128)) && continue
		exit 0
	fi
done
