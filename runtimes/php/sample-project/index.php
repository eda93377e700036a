<?php
// A lambdo job. index.php returns the handler; the runtime calls it once per event of the
// Machine's events file, in order. Throw to fail an event: the others still run, and the
// Machine exits non-zero.
//
// require __DIR__ . '/vendor/autoload.php';   // with Composer dependencies

// Delivery is at least once: a message may come again after its work was done. The SQS
// message id is the idempotency key: a marker per id, written once the work succeeded (a
// failed event is retried in full). A directory only catches repeats it outlives (a Fly
// Machine starts with an empty disk): production code uses a durable store, such as a
// database table with the message id as a unique key, inserted in the work's transaction.
$doneDir = getenv('JOB_DONE_DIR') ?: sys_get_temp_dir() . '/lambdo-jobs-done';
if (!is_dir($doneDir)) mkdir($doneDir, 0777, true);

$work = function (array $event, array $context): void {
    switch ($event['action'] ?? null) {
        case 'resize':
            usleep(20_000); // stands in for real work: fetch, resize, upload
            printf("resized %s to %dpx for user %d (event %d of %d)\n",
                $event['image'], $event['width'], $event['user'], $context['index'] + 1, $context['count']);
            break;
        case 'notify':
            // Integers beyond PHP_INT_MAX arrive as strings (JSON_BIGINT_AS_STRING), digits intact.
            printf("notified user %d about order %s\n", $event['user'], $event['order']);
            break;
        default:
            throw new InvalidArgumentException('unknown action ' . json_encode($event['action'] ?? null));
    }
};

return function (array $event, array $context) use ($work, $doneDir): void {
    // Without lambdo's meta file (an older lambdo, a hand run) there is no message id.
    $messageId = $context['messageId'] ?? null;
    $marker = $doneDir . '/' . rawurlencode((string) $messageId);
    if ($messageId !== null && file_exists($marker)) {
        echo "message $messageId already done: skipped (receive count " . ($context['receiveCount'] ?? '?') . ")\n";
        return;
    }
    $work($event, $context);
    if ($messageId !== null) touch($marker);
};
