// hutch javascript interpreter worker.
//
// Run by the agent as `node --preserve-symlinks-main /proc/self/fd/5` with fd 5 = this source
// (a sealed memfd; node reads it at start and the worker closes it), fd 0 = /dev/null, fds 1/2 =
// pipes the agent reads raw, fd 3 = control in (one JSON object per line), fd 4 = control out.
// The protocol is in
// crates/hutch-agent/workers/README.md.
//
// Cells run in the main V8 context (`vm.Script#runInThisContext`), so `require`, `Buffer`,
// `process` and modules behave exactly as in a node script. State persists across cells:
// top-level `let`/`const` are rewritten to `var` and `class X` to `var X = class X`, which
// makes them properties of the global object (so a cell can be run again without
// "Identifier has already been declared"). A cell that uses top-level `await` runs inside an
// async function; its top-level declarations are copied to the global object when it completes,
// and its last expression statement is returned as the result.
(function hutchWorker() {
  'use strict';
  const fs = require('fs');
  const vm = require('vm');
  const util = require('util');
  const { Writable } = require('stream');
  const Module = require('module');

  // --- fds: control channel on close-on-exec descriptors --------------------------------------
  // Reopening the pipes through /proc gives descriptors that libuv opens with O_CLOEXEC, so
  // child processes never inherit the control channel.
  function reopen(fd, flags) {
    try {
      const nfd = fs.openSync('/proc/self/fd/' + fd, flags);
      fs.closeSync(fd);
      return nfd;
    } catch (e) {
      return fd;
    }
  }
  // fd 5 held this source, which node has read: close it, and leave process.argv as
  // `node -e` would (the user's code never sees the worker's path).
  if (process.argv[1] === '/proc/self/fd/5') {
    try {
      fs.closeSync(5);
    } catch (e) {}
    process.argv.length = 1;
  }
  const CTL_IN = reopen(3, 'r');
  const CTL_OUT = reopen(4, 'a');

  const sleepBuf = new Int32Array(new SharedArrayBuffer(4));
  function writeAll(fd, buf) {
    let off = 0;
    while (off < buf.length) {
      try {
        off += fs.writeSync(fd, buf, off, buf.length - off);
      } catch (e) {
        if (e.code === 'EAGAIN') {
          Atomics.wait(sleepBuf, 0, 0, 1);
          continue;
        }
        throw e;
      }
    }
  }

  function send(obj) {
    try {
      writeAll(CTL_OUT, Buffer.from(JSON.stringify(obj) + '\n'));
    } catch (e) {
      process.reallyExit(1); // the agent is gone
    }
  }

  // --- stdout/stderr: synchronous writes straight to fds 1/2 ----------------------------------
  function syncStream(fd) {
    const s = new Writable({
      decodeStrings: true,
      write(chunk, _enc, cb) {
        try {
          writeAll(fd, chunk);
          cb();
        } catch (e) {
          cb(e);
        }
      },
    });
    s.fd = fd;
    s.isTTY = false;
    s._isStdio = true;
    s.destroySoon = s.destroy;
    s._destroy = (err, cb) => cb(err);
    return s;
  }
  const out = syncStream(1);
  const err = syncStream(2);
  Object.defineProperty(process, 'stdout', { configurable: true, enumerable: true, get: () => out });
  Object.defineProperty(process, 'stderr', { configurable: true, enumerable: true, get: () => err });
  const cons = new console.Console({ stdout: out, stderr: err });
  Object.defineProperty(globalThis, 'console', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: cons,
  });

  // `require` resolves relative to the current working directory (process.chdir persists).
  function hutchRequire(id) {
    return Module.createRequire(process.cwd() + '/')(id);
  }
  hutchRequire.resolve = (id, opts) => Module.createRequire(process.cwd() + '/').resolve(id, opts);
  hutchRequire.cache = Module._cache;
  globalThis.require = hutchRequire;
  if (globalThis.module === undefined) globalThis.module = { exports: {} };
  if (globalThis.exports === undefined) globalThis.exports = globalThis.module.exports;

  // Errors thrown after a cell ended (timers, rejected promises) are printed, not fatal.
  process.on('uncaughtException', (e) => {
    try {
      err.write('Uncaught ' + (e && e.stack ? e.stack : String(e)) + '\n');
    } catch (_) {}
  });
  process.on('unhandledRejection', (e) => {
    try {
      err.write('Unhandled promise rejection: ' + (e && e.stack ? e.stack : String(e)) + '\n');
    } catch (_) {}
  });

  // --- state ------------------------------------------------------------------------------------
  let count = 0;
  let executing = false;
  let interrupted = false;
  let interruptReject = null;

  process.on('SIGINT', () => {
    if (!executing) return;
    interrupted = true;
    if (interruptReject) interruptReject(interruptError());
  });

  function interruptError() {
    const e = new Error('Script execution interrupted.');
    e.code = 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
    return e;
  }

  // --- a small JavaScript tokenizer (enough to find top-level statements) ---------------------
  const MULTI = [
    '>>>=', '...', '===', '!==', '**=', '<<=', '>>=', '>>>', '&&=', '||=', '??=',
    '=>', '==', '!=', '<=', '>=', '&&', '||', '??', '?.', '++', '--', '+=', '-=', '*=', '/=',
    '%=', '&=', '|=', '^=', '**', '<<', '>>',
  ];
  const REGEX_AFTER_KW = new Set([
    'return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case',
    'do', 'else', 'yield', 'await',
  ]);
  const ID_START = /[A-Za-z_$\u0080-\uffff]/;
  const ID_PART = /[\w$\u0080-\uffff]/;

  // Tokens: {t: 'id'|'num'|'str'|'tmpl'|'re'|'p', v, s, e, d (bracket depth), nl (newline before)}
  function tokenize(src) {
    const toks = [];
    const stack = []; // '(' '[' '{' or '${'
    let i = 0;
    let nl = false;
    const n = src.length;
    let prev = null;
    function push(t, v, s, e, d) {
      const tok = { t, v, s, e, d, nl };
      toks.push(tok);
      prev = tok;
      nl = false;
    }
    function regexAllowed() {
      if (!prev) return true;
      if (prev.t === 'p') return !(prev.v === ')' || prev.v === ']' || prev.v === '}');
      if (prev.t === 'id') return REGEX_AFTER_KW.has(prev.v);
      return false;
    }
    function skipTemplate() {
      // at a backtick or just after a `}` closing `${`; returns true when `${` was entered
      while (i < n) {
        const c = src[i];
        if (c === '\\') {
          i += 2;
        } else if (c === '`') {
          i++;
          return false;
        } else if (c === '$' && src[i + 1] === '{') {
          i += 2;
          stack.push('${');
          return true;
        } else {
          i++;
        }
      }
      return false;
    }
    while (i < n) {
      const c = src[i];
      if (c === '\n' || c === '\u2028' || c === '\u2029') {
        nl = true;
        i++;
      } else if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v' || c === '\ufeff' || c === '\u00a0') {
        i++;
      } else if (c === '/' && src[i + 1] === '/') {
        while (i < n && src[i] !== '\n') i++;
      } else if (c === '/' && src[i + 1] === '*') {
        const j = src.indexOf('*/', i + 2);
        const end = j < 0 ? n : j + 2;
        if (src.slice(i, end).includes('\n')) nl = true;
        i = end;
      } else if (c === '"' || c === "'") {
        const s = i++;
        while (i < n && src[i] !== c && src[i] !== '\n') i += src[i] === '\\' ? 2 : 1;
        i++;
        push('str', src.slice(s, i), s, i, stack.length);
      } else if (c === '`') {
        const s = i++;
        const d = stack.length;
        skipTemplate();
        push('tmpl', '`', s, i, d);
      } else if (c === '/' && regexAllowed()) {
        const s = i++;
        let cls = false;
        while (i < n && src[i] !== '\n') {
          const ch = src[i];
          if (ch === '\\') {
            i += 2;
            continue;
          }
          i++;
          if (ch === '[') cls = true;
          else if (ch === ']') cls = false;
          else if (ch === '/' && !cls) break;
        }
        while (i < n && ID_PART.test(src[i])) i++;
        push('re', src.slice(s, i), s, i, stack.length);
      } else if (ID_START.test(c) || c === '#') {
        const s = i++;
        while (i < n && ID_PART.test(src[i])) i++;
        push('id', src.slice(s, i), s, i, stack.length);
      } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(src[i + 1] || ''))) {
        const s = i++;
        while (i < n && /[\w.]/.test(src[i])) i++;
        push('num', src.slice(s, i), s, i, stack.length);
      } else {
        const s = i;
        let v = c;
        for (const m of MULTI) {
          if (src.startsWith(m, i)) {
            v = m;
            break;
          }
        }
        i += v.length;
        if (v === '(' || v === '[' || v === '{') {
          push('p', v, s, i, stack.length);
          stack.push(v);
        } else if (v === ')' || v === ']' || v === '}') {
          const top = stack.pop();
          if (top === '${') {
            // back inside a template literal
            skipTemplate();
            continue;
          }
          push('p', v, s, i, stack.length);
        } else {
          push('p', v, s, i, stack.length);
        }
      }
    }
    return toks;
  }

  const STMT_KW = new Set([
    'var', 'let', 'const', 'function', 'class', 'if', 'for', 'while', 'do', 'try', 'switch',
    'return', 'throw', 'import', 'export', 'break', 'continue', 'debugger', 'with',
  ]);

  function atStatementStart(toks, k) {
    const p = k > 0 ? toks[k - 1] : null;
    if (!p) return true;
    if (p.t === 'p' && (p.v === ';' || p.v === '}' || p.v === '{')) return true;
    return toks[k].nl && !(p.t === 'p' && p.v !== ')' && p.v !== ']');
  }

  // Binding names of a declaration pattern starting at token k; returns [names, next index].
  function bindingNames(toks, k) {
    const t = toks[k];
    if (!t) return [[], k];
    if (t.t === 'id') return [[t.v], k + 1];
    if (t.t !== 'p' || (t.v !== '{' && t.v !== '[')) return [[], k + 1];
    const names = [];
    const d = t.d;
    let j = k + 1;
    for (; j < toks.length; j++) {
      const x = toks[j];
      if (x.d === d && x.t === 'p' && (x.v === '}' || x.v === ']')) break;
      if (x.t === 'id') {
        const nx = toks[j + 1];
        const pv = toks[j - 1];
        if (pv && pv.t === 'p' && pv.v === '.') continue;
        if (nx && nx.t === 'p' && [',', '}', ']', '='].includes(nx.v)) names.push(x.v);
      }
    }
    return [names, j + 1];
  }

  // A static `import` (not valid in a script) becomes `require`:
  //   import d, {a, b as c} from 'm'  →  var d = <default of m>, {a, b: c} = require('m')
  //   import * as ns from 'm'         →  var ns = require('m')
  //   import 'm'                      →  require('m')
  function importToRequire(toks, k) {
    let j = k + 1;
    let def = null;
    let ns = null;
    const named = [];
    const names = [];
    if (toks[j] && toks[j].t === 'str') {
      return { end: toks[j].e, text: 'require(' + toks[j].v + ');', names };
    }
    if (toks[j] && toks[j].t === 'id' && toks[j].v !== 'from') {
      def = toks[j].v;
      j++;
      if (toks[j] && toks[j].v === ',') j++;
    }
    if (toks[j] && toks[j].v === '*') {
      if (!(toks[j + 1] && toks[j + 1].v === 'as' && toks[j + 2] && toks[j + 2].t === 'id')) return null;
      ns = toks[j + 2].v;
      j += 3;
    } else if (toks[j] && toks[j].v === '{') {
      j++;
      while (toks[j] && toks[j].v !== '}') {
        if (toks[j].t === 'id' || toks[j].t === 'str') {
          const from = toks[j].v;
          if (toks[j + 1] && toks[j + 1].v === 'as' && toks[j + 2]) {
            named.push(from + ': ' + toks[j + 2].v);
            names.push(toks[j + 2].v);
            j += 3;
          } else {
            named.push(from);
            names.push(from);
            j++;
          }
        } else {
          j++;
        }
      }
      j++;
    }
    if (!(toks[j] && toks[j].v === 'from' && toks[j + 1] && toks[j + 1].t === 'str')) return null;
    const req = 'require(' + toks[j + 1].v + ')';
    const parts = [];
    if (def) {
      parts.push(def + ' = ((m) => (m && m.__esModule && \'default\' in m ? m.default : m))(' + req + ')');
      names.push(def);
    }
    if (ns) {
      parts.push(ns + ' = ' + req);
      names.push(ns);
    }
    if (named.length) parts.push('{' + named.join(', ') + '} = ' + req);
    if (!parts.length) return { end: toks[j + 1].e, text: req + ';', names };
    return { end: toks[j + 1].e, text: 'var ' + parts.join(', ') + ';', names };
  }

  // Rewrites top-level declarations; returns {code, names, hasAwait, toks}.
  function transform(src) {
    const toks = tokenize(src);
    const edits = []; // [start, end, text]
    const names = new Set();
    let hasAwait = false;
    for (let k = 0; k < toks.length; k++) {
      const t = toks[k];
      if (t.t === 'id' && t.v === 'await') hasAwait = true;
      if (t.d !== 0 || t.t !== 'id') continue;
      const nx = toks[k + 1];
      if ((t.v === 'let' || t.v === 'const' || t.v === 'var') && atStatementStart(toks, k) && nx &&
          (nx.t === 'id' || (nx.t === 'p' && (nx.v === '{' || nx.v === '[')))) {
        if (t.v !== 'var') edits.push([t.s, t.e, 'var']);
        // declarators: pattern [= init] {, pattern [= init]}
        let j = k + 1;
        for (;;) {
          const [ns, after] = bindingNames(toks, j);
          ns.forEach((x) => names.add(x));
          j = after;
          // skip the initializer up to a top-level comma or the end of the statement
          let more = false;
          for (; j < toks.length; j++) {
            const x = toks[j];
            if (x.d !== 0) continue;
            if (x.t === 'p' && x.v === ';') break;
            if (x.t === 'p' && x.v === ',') {
              more = true;
              j++;
              break;
            }
            const pv = toks[j - 1];
            if (x.nl && !(pv.t === 'p' && [',', '=', '(', '[', '{'].includes(pv.v)) && !(x.t === 'p' && x.v !== '(' && x.v !== '[' && x.v !== '{')) break;
          }
          if (!more) break;
        }
        continue;
      }
      if (t.v === 'import' && atStatementStart(toks, k) && nx && (nx.t === 'id' || nx.t === 'str' || nx.v === '{' || nx.v === '*')) {
        const imp = importToRequire(toks, k);
        if (imp) {
          edits.push([t.s, imp.end, imp.text]);
          imp.names.forEach((x) => names.add(x));
          continue;
        }
      }
      if (t.v === 'class' && atStatementStart(toks, k) && nx && nx.t === 'id' && nx.v !== 'extends') {
        // class X … { … }  →  var X = class X … { … };
        let j = k + 2;
        while (j < toks.length && !(toks[j].d === 0 && toks[j].t === 'p' && toks[j].v === '{')) j++;
        let m = j + 1;
        while (m < toks.length && !(toks[m].d === 0 && toks[m].t === 'p' && toks[m].v === '}')) m++;
        if (m < toks.length) {
          edits.push([t.s, t.s, 'var ' + nx.v + ' = ']);
          edits.push([toks[m].e, toks[m].e, ';']);
          names.add(nx.v);
        }
        continue;
      }
      if (t.v === 'function' && atStatementStart(toks, k)) {
        let j = k + 1;
        if (toks[j] && toks[j].v === '*') j++;
        if (toks[j] && toks[j].t === 'id') names.add(toks[j].v);
      } else if (t.v === 'async' && nx && nx.v === 'function' && atStatementStart(toks, k)) {
        let j = k + 2;
        if (toks[j] && toks[j].v === '*') j++;
        if (toks[j] && toks[j].t === 'id') names.add(toks[j].v);
      }
    }
    return { edits, names: [...names], hasAwait, toks };
  }

  function applyEdits(src, edits) {
    const sorted = edits.slice().sort((a, b) => b[0] - a[0]);
    let s = src;
    for (const [a, b, text] of sorted) s = s.slice(0, a) + text + s.slice(b);
    return s;
  }

  // `import()` in a cell loads modules like the main script does. The option is still marked
  // experimental in node 20; its one-time warning is not shown to the user.
  const dynImport = vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER;
  if (dynImport) {
    const emit = process.emitWarning;
    process.emitWarning = function emitWarning(warning, ...rest) {
      if (String((warning && warning.message) || warning).includes('USE_MAIN_CONTEXT_DEFAULT_LOADER')) return;
      return emit.call(this, warning, ...rest);
    };
  }
  function makeScript(code, filename) {
    if (!dynImport) return new vm.Script(code, { filename });
    return new vm.Script(code, { filename, importModuleDynamically: dynImport });
  }

  function compiles(code, filename) {
    try {
      new vm.Script(code, { filename });
      return true;
    } catch (e) {
      return false;
    }
  }

  // Wraps a cell with top-level await in an async function that returns the last expression.
  function wrapAsync(src, tr, filename) {
    const { toks, names } = tr;
    const copy = names.map((x) => 'try{globalThis[' + JSON.stringify(x) + ']=' + x + '}catch(_){}').join('');
    // The body stays at function scope (not in a block), so function and class declarations
    // are visible to the copy that runs after the last expression.
    const head = '(async () => {';
    // candidate starts of the last statement: top-level line starts and positions after `;`
    let end = src.length;
    let last = toks.length - 1;
    while (last >= 0 && toks[last].d === 0 && toks[last].t === 'p' && toks[last].v === ';') {
      end = toks[last].s;
      last--;
    }
    let best = null;
    let tries = 0;
    for (let k = last; k >= 0 && tries < 40; k--) {
      const t = toks[k];
      if (t.d !== 0) continue;
      const prev = k > 0 ? toks[k - 1] : null;
      const afterSemi = prev && prev.d === 0 && prev.t === 'p' && prev.v === ';';
      if (!(k === 0 || t.nl || afterSemi)) continue;
      if (t.t === 'id' && STMT_KW.has(t.v)) break;
      if (t.t === 'p' && (t.v === '}' || t.v === '{')) break;
      tries++;
      const edits = tr.edits.filter((e) => e[0] < t.s);
      edits.push([t.s, t.s, 'return ((__hutch_v) => {' + copy + 'return __hutch_v})(']);
      edits.push([end, src.length, '\n)' + src.slice(end).replace(/^\s*;/, '')]);
      const cand = head + applyEdits(src, edits) + '\n})()';
      if (compiles(cand, filename)) best = cand;
      if (afterSemi || k === 0) break;
      if (prev && prev.t === 'p' && prev.v === '}') break;
    }
    return best || head + applyEdits(src, tr.edits) + '\n;' + copy + '})()';
  }

  // --- errors -------------------------------------------------------------------------------
  const sources = new Map();
  const colShift = new Map();

  function cleanStack(e) {
    let stack = e && typeof e.stack === 'string' ? e.stack : String(e);
    const lines = stack.split('\n');
    let lastCell = -1;
    lines.forEach((l, i) => {
      if (/^\s+at .*<cell-\d+>/.test(l)) lastCell = i;
    });
    const plumbing = /^\s+at .*(\[eval\]|\/proc\/self\/fd\/|node:vm:|node:events|node:internal\/streams|Socket\.|hutchWorker|runCell|pump|onData)/;
    const kept = lines.filter((l, i) => (lastCell >= 0 ? i <= lastCell || !/^\s+at /.test(l) : !plumbing.test(l)));
    stack = kept.join('\n');
    // Show the source line of the innermost cell frame, like node does for uncaught errors.
    const m = /<cell-(\d+)>:(\d+):(\d+)/.exec(stack);
    if (m && !(e instanceof SyntaxError)) {
      const src = sources.get('<cell-' + m[1] + '>');
      const line = src ? src.split('\n')[Number(m[2]) - 1] : undefined;
      if (line !== undefined) {
        // an async cell's wrapper precedes its first line
        const shift = Number(m[2]) === 1 ? colShift.get('<cell-' + m[1] + '>') || 0 : 0;
        const col = Math.max(0, Number(m[3]) - 1 - shift);
        stack = '<cell-' + m[1] + '>:' + m[2] + '\n' + line + '\n' + ' '.repeat(col) + '^\n\n' + stack;
      }
    }
    return stack;
  }

  function errorMessage(e) {
    if (e instanceof Error || (e && typeof e === 'object' && 'message' in e)) {
      return {
        name: String(e.name || (e.constructor && e.constructor.name) || 'Error'),
        value: String(e.message),
        traceback: cleanStack(e),
      };
    }
    return { name: 'Error', value: 'Uncaught ' + util.inspect(e), traceback: 'Uncaught ' + util.inspect(e) };
  }

  // --- execution ------------------------------------------------------------------------------
  async function runCell(msg) {
    const id = msg.id;
    const code = typeof msg.code === 'string' ? msg.code : '';
    count++;
    const n = count;
    const filename = '<cell-' + n + '>';
    sources.set(filename, code);
    const saved = [];
    if (msg.envs && typeof msg.envs === 'object') {
      for (const [k, v] of Object.entries(msg.envs)) {
        if (typeof v !== 'string' || !k || k.includes('=') || k.includes('\0') || v.includes('\0')) continue;
        saved.push([k, Object.prototype.hasOwnProperty.call(process.env, k) ? process.env[k] : undefined]);
        process.env[k] = v;
      }
    }
    interrupted = false;
    executing = true;
    let status = 'ok';
    let errorSent = false;
    try {
      let value;
      const tr = transform(code);
      let script = null;
      let syncError = null;
      try {
        script = makeScript(applyEdits(code, tr.edits), filename);
      } catch (e) {
        syncError = e;
      }
      if (script) {
        value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
      } else if (tr.hasAwait) {
        const wrapped = wrapAsync(code, tr, filename);
        colShift.set(filename, '(async () => {'.length);
        const promise = makeScript(wrapped, filename).runInThisContext({ breakOnSigint: true, displayErrors: false });
        const stop = new Promise((_, reject) => {
          interruptReject = reject;
        });
        if (interrupted) throw interruptError();
        value = await Promise.race([promise, stop]);
      } else {
        throw syncError;
      }
      if (value !== undefined) {
        send({
          type: 'result',
          id,
          data: { 'text/plain': util.inspect(value, { colors: false }) },
          executionCount: n,
        });
      }
    } catch (e) {
      if (e && e.code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') interrupted = true;
      status = 'error';
      if (interrupted) {
        send({ type: 'error', id, name: 'KeyboardInterrupt', value: 'Script execution interrupted.', traceback: 'KeyboardInterrupt: Script execution interrupted.' });
      } else {
        send(Object.assign({ type: 'error', id }, errorMessage(e)));
      }
      errorSent = true;
    } finally {
      executing = false;
      interruptReject = null;
      for (const [k, old] of saved.reverse()) {
        if (old === undefined) delete process.env[k];
        else process.env[k] = old;
      }
    }
    if (interrupted) {
      if (!errorSent) send({ type: 'error', id, name: 'KeyboardInterrupt', value: 'Script execution interrupted.', traceback: '' });
      status = 'interrupted';
    }
    send({ type: 'done', id, status, executionCount: n });
  }

  // --- control loop ---------------------------------------------------------------------------
  const queue = [];
  let running = false;
  async function pump() {
    if (running) return;
    running = true;
    while (queue.length) {
      const line = queue.shift();
      let msg;
      try {
        msg = JSON.parse(line);
      } catch (e) {
        continue;
      }
      if (msg && msg.type === 'execute') await runCell(msg);
    }
    running = false;
  }

  let pending = '';
  function onData(chunk) {
    pending += chunk;
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, i);
      pending = pending.slice(i + 1);
      if (line.trim()) queue.push(line);
    }
    pump();
  }
  function onEnd() {
    process.exit(0);
  }
  let input;
  try {
    const net = require('net');
    input = new net.Socket({ fd: CTL_IN, readable: true, writable: false });
  } catch (e) {
    input = fs.createReadStream(null, { fd: CTL_IN });
  }
  input.setEncoding('utf8');
  input.on('data', onData);
  input.on('end', onEnd);
  input.on('error', onEnd);

  send({ type: 'ready', language: 'javascript', kernel: 'node', pid: process.pid });
})();
