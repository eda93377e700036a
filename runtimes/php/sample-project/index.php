<?php
// A lambdo job. index.php returns the handler; the runtime calls it once per event of the
// Machine's events file, in order. Throw to fail an event: the others still run, and the
// Machine exits non-zero.
//
// require __DIR__ . '/vendor/autoload.php';   // with Composer dependencies

return function (array $event, array $context): void {
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
