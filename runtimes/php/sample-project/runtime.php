<?php
// lambdo PHP runtime: calls the user's handler once per event of the events file, in order.
// See runtimes/php/README.md for the contract; in short:
//
//   EVENTS_PATH       the JSON array of events            (default /tmp/events.json)
//   EVENTS_META_PATH  lambdo's facts about each event's message, aligned with the events
//                     (default /tmp/events.meta.json; that default may be absent)
//   LAMBDO_HANDLER    the handler file, or a directory holding index.php   (default /app)
//   index.php returns a callable: function (mixed $event, array $context) { ... }
//   $context = ['index' => int, 'count' => int, 'raw' => the event's exact JSON text,
//               'messageId' => ..., 'receiveCount' => ..., ...: the meta entry's, as they stand]
//   events are decoded as associative arrays, integers beyond PHP_INT_MAX as strings
//
// Exit status: 0 every event succeeded (or there were none), 1 at least one event failed
// (threw, hit a fatal error, or called exit), 2 nothing could run (events or meta file
// missing, unreadable, not JSON, not an array or not aligned; handler missing, not loadable or
// not a callable).
// The runtime logs to stderr, one "lambdo: ..." line per event start and end; the handler's
// own output is left alone.
//
// No strict_types here on purpose: strict_types applies to calls made from this file, and
// the handler's parameters should be checked the way its author's PHP settings say.

namespace Lambdo\Runtime;

const DEFAULT_EVENTS_PATH = '/tmp/events.json';
const DEFAULT_META_PATH = '/tmp/events.meta.json';
const DEFAULT_APP_DIR = '/app';
const INDEX_FILE = 'index.php';
const JSON_DEPTH = 2048;   // lambdo bodies nest at most 512 deep

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_SETUP = 2;

const CONTRACT = 'index.php must end with: return function ($event, array $context) { ... };';

final class Run
{
    public static string $phase = 'setup';   // setup -> loading -> running -> done
    public static string $handlerPath = '';
    public static int $count = 0;
    public static int $current = -1;         // index of the event being run (or last run)
    public static int $finished = 0;         // events whose handler has returned or thrown
    /** @var array<int, true> */
    public static array $failed = [];
}

function log(string $msg): void
{
    fwrite(\STDERR, "lambdo: $msg\n");
}

function indent(string $text): string
{
    return str_replace("\n", "\n    ", rtrim($text));
}

function setupFailure(string $msg): never
{
    log("error: $msg");
    Run::$phase = 'done';
    exit(EXIT_SETUP);
}

function ms(int $t0): string
{
    return (string) intdiv(hrtime(true) - $t0 + 500000, 1000000) . ' ms';
}

function lastError(): string
{
    $e = error_get_last();
    error_clear_last();
    if ($e === null) return 'unknown error';
    // "file_get_contents(/x): Failed to open stream: No such file or directory" -> the reason
    return preg_replace('/^[a-z_]+\(.*?\): /', '', $e['message']);
}

// An absolute path, without "." segments or doubled slashes ("..", symlinks: left as they are).
function absolute(string $path): string
{
    if ($path[0] !== '/') $path = getcwd() . '/' . $path;
    $parts = array_filter(explode('/', $path), fn ($p) => $p !== '' && $p !== '.');
    return '/' . implode('/', $parts);
}

// ---- the events file ------------------------------------------------------------------------

function jsonType(string $first): string
{
    return match ($first) {
        '{' => 'an object',
        '[' => 'an array',
        '"' => 'a string',
        't', 'f' => 'a boolean',
        'n' => 'null',
        default => 'a number',
    };
}

/**
 * The exact source text of each element of a JSON array, given text that json_decode has
 * already accepted as an array: split at the top-level commas, outside strings.
 * @return list<string>
 */
function splitArray(string $text): array
{
    $out = [];
    $depth = 0;
    $inString = false;
    $start = strpos($text, '[') + 1;
    $n = strlen($text);
    for ($i = $start; $i < $n; $i++) {
        $c = $text[$i];
        if ($inString) {
            if ($c === '\\') $i++;
            elseif ($c === '"') $inString = false;
            continue;
        }
        if ($c === '"') {
            $inString = true;
        } elseif ($c === '[' || $c === '{') {
            $depth++;
        } elseif ($c === ']' || $c === '}') {
            if ($depth === 0) {
                $last = trim(substr($text, $start, $i - $start), " \t\n\r");
                if ($last !== '' || $out) $out[] = $last;
                return $out;
            }
            $depth--;
        } elseif ($c === ',' && $depth === 0) {
            $out[] = trim(substr($text, $start, $i - $start), " \t\n\r");
            $start = $i + 1;
        }
    }
    return $out;
}

/**
 * A file that must hold a JSON array ("events file", "meta file": $what).
 * @return array{0: list<mixed>, 1: string} the values and the text
 */
function readArray(string $path, string $what, string $items): array
{
    if (is_dir($path)) setupFailure("cannot read $what $path: it is a directory");
    $text = @file_get_contents($path);
    if ($text === false) setupFailure("cannot read $what $path: " . lastError());
    // RFC 8259 JSON is UTF-8; a leading byte order mark is ignored.
    if (str_starts_with($text, "\xEF\xBB\xBF")) $text = substr($text, 3);
    try {
        $values = json_decode($text, true, JSON_DEPTH, \JSON_BIGINT_AS_STRING | \JSON_THROW_ON_ERROR);
    } catch (\JsonException $e) {
        if ($e->getCode() === \JSON_ERROR_UTF8) setupFailure("$what $path is not valid UTF-8");
        setupFailure("$what $path is not valid JSON: " . $e->getMessage());
    }
    // With associative decoding an object is a PHP array too: look at the text.
    $first = ltrim($text, " \t\n\r")[0] ?? '';
    if ($first !== '[') setupFailure("$what $path holds " . jsonType($first) . ", not an array of $items");
    return [array_values($values), $text];
}

/** @return array{0: list<mixed>, 1: list<string>} */
function readEvents(string $path): array
{
    [$events, $text] = readArray($path, 'events file', 'events');
    $raws = splitArray($text);
    if (count($raws) !== count($events)) {
        setupFailure("events file $path: internal error splitting the array (" . count($raws) . ' != ' . count($events) . ')');
    }
    return [$events, $raws];
}

/**
 * The meta entries (one object per event), or null when there is no meta file to read: an
 * older lambdo, or a hand run. A meta file that was named, or that exists, must be right:
 * a message id the handler keys its idempotency on must never be silently missing or shifted.
 * @return array{0: string, 1: list<array>}|null the path and the entries
 */
function readMeta(string $eventsPath, int $count): ?array
{
    $setting = getenv('EVENTS_META_PATH');
    $named = $setting !== false && $setting !== '';
    $path = $named ? absolute($setting) : DEFAULT_META_PATH;
    if (!$named && !file_exists($path)) return null;
    [$entries, $text] = readArray($path, 'meta file', 'entries');
    $n = count($entries);
    if ($n !== $count) {
        setupFailure("meta file $path holds $n " . ($n === 1 ? 'entry' : 'entries') . " for the $count "
            . ($count === 1 ? 'event' : 'events') . " of events file $eventsPath (one per event expected)");
    }
    // {} and [] both decode to arrays: the text says which an entry was.
    foreach (splitArray($text) as $i => $raw) {
        if ($raw[0] !== '{') setupFailure("meta file $path: entry $i is " . jsonType($raw[0]) . ', not an object');
    }
    return [$path, $entries];
}

// ---- the handler ----------------------------------------------------------------------------

function findHandler(): string
{
    $setting = getenv('LAMBDO_HANDLER');
    if ($setting === false || $setting === '') {
        $file = DEFAULT_APP_DIR . '/' . INDEX_FILE;
        if (!is_file($file)) setupFailure("handler not found: $file does not exist (COPY your project to /app, or set LAMBDO_HANDLER)");
        return $file;
    }
    $target = absolute($setting);
    if (is_dir($target)) {
        $file = ($target === '/' ? '' : $target) . '/' . INDEX_FILE;
        if (!is_file($file)) setupFailure("handler not found: $file (from LAMBDO_HANDLER) does not exist");
        return $file;
    }
    if (!is_file($target)) setupFailure("handler not found: $target (from LAMBDO_HANDLER) does not exist");
    return $target;
}

function describeValue(mixed $v): string
{
    if ($v === 1) return 'int(1), as a file without a return statement does';
    $type = get_debug_type($v);
    return is_scalar($v) ? "$type(" . var_export($v, true) . ')' : $type;
}

function loadHandler(string $file): callable
{
    if (!is_readable($file)) setupFailure("cannot load handler $file: it is not readable");
    try {
        // A static closure: the file sees no variables of the runtime's.
        $handler = (static function () {
            return require func_get_arg(0);
        })($file);
    } catch (\Throwable $e) {
        setupFailure("cannot load handler $file: " . indent((string) $e));
    }
    if (!is_callable($handler)) {
        setupFailure("$file returned " . describeValue($handler) . ', not a callable (' . CONTRACT . ')');
    }
    return $handler;
}

// ---- what can end the process behind the runtime's back --------------------------------------

const FATAL = \E_ERROR | \E_PARSE | \E_CORE_ERROR | \E_COMPILE_ERROR | \E_USER_ERROR | \E_RECOVERABLE_ERROR;

// Runs when the process ends for any reason; only acts when the runtime did not finish:
// a fatal error (memory limit, ...) or an exit()/die() in the handler.
function onShutdown(): void
{
    if (Run::$phase === 'done') return;
    $e = error_get_last();
    $how = ($e !== null && ($e['type'] & FATAL))
        ? 'PHP fatal error: ' . indent($e['message']) . " in {$e['file']}:{$e['line']}"
        : 'exit() or die() was called';
    if (Run::$phase === 'running') {
        $i = Run::$current;
        Run::$failed[$i] = true;
        Run::$finished = $i + 1;
        $rest = Run::$count - $i - 1;
        $notRun = $rest === 0 ? '' : ($rest === 1 ? ', event ' . ($i + 1) . ' did not run'
            : ', events ' . ($i + 1) . ' to ' . (Run::$count - 1) . ' did not run');
        log("event $i failed: $how; the run stops here$notRun");
        log(summary());
        Run::$phase = 'done';
        exit(EXIT_FAILED);
    }
    if (Run::$phase === 'loading') {
        log('error: loading handler ' . Run::$handlerPath . " ended the process: $how");
    } else {
        log("error: the runtime stopped early: $how");
    }
    Run::$phase = 'done';
    exit(EXIT_SETUP);
}

function summary(): string
{
    if (Run::$count === 0) return '0 events: nothing to run';
    $failed = array_keys(Run::$failed);
    sort($failed);
    $ok = Run::$finished - count($failed);
    $notRun = Run::$count - Run::$finished;
    return Run::$count . (Run::$count === 1 ? ' event' : ' events') . ": $ok ok, " . count($failed) . ' failed'
        . ($failed ? ' (index ' . implode(', ', $failed) . ')' : '')
        . ($notRun ? ", $notRun not run" : '');
}

// ---- the run --------------------------------------------------------------------------------

function main(): never
{
    register_shutdown_function(__NAMESPACE__ . '\onShutdown');

    $path = getenv('EVENTS_PATH');
    $path = ($path === false || $path === '') ? DEFAULT_EVENTS_PATH : absolute($path);
    [$events, $raws] = readEvents($path);
    Run::$count = count($events);
    $meta = readMeta($path, Run::$count);

    Run::$handlerPath = findHandler();
    Run::$phase = 'loading';
    $handler = loadHandler(Run::$handlerPath);

    Run::$phase = 'running';
    log(Run::$count . (Run::$count === 1 ? ' event' : ' events') . " from $path"
        . ($meta ? " (meta $meta[0])" : '') . ', handler ' . Run::$handlerPath);
    for ($i = 0; $i < Run::$count; $i++) {
        Run::$current = $i;
        // The entry's fields as they stand; index, count and raw are the runtime's own.
        $context = ['index' => $i, 'count' => Run::$count, 'raw' => $raws[$i]]
            + ($meta ? $meta[1][$i] + ['messageAttributes' => []] : []);
        $message = is_string($context['messageId'] ?? null) ? ", message {$context['messageId']}" : '';
        log("event $i start (" . ($i + 1) . ' of ' . Run::$count . "$message)");
        $t0 = hrtime(true);
        try {
            $handler($events[$i], $context);
            log("event $i ok in " . ms($t0));
        } catch (\Throwable $e) {
            Run::$failed[$i] = true;
            log("event $i failed in " . ms($t0) . ': ' . indent((string) $e));
        }
        Run::$finished = $i + 1;
    }
    Run::$phase = 'done';
    log(summary());
    exit(Run::$failed ? EXIT_FAILED : EXIT_OK);
}

main();
