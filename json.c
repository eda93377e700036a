#include "json.h"

#include <pthread.h>

static pthread_mutex_t json_mu = PTHREAD_MUTEX_INITIALIZER;

cJSON *json_parse(const char *s, size_t len)
{
    cJSON *j;

    pthread_mutex_lock(&json_mu);
    j = cJSON_ParseWithLength(s, len);
    pthread_mutex_unlock(&json_mu);
    return j;
}

cJSON *json_parse_all(const char *s, const char **end)
{
    cJSON *j;

    pthread_mutex_lock(&json_mu);
    j = cJSON_ParseWithOpts(s, end, 1);
    pthread_mutex_unlock(&json_mu);
    return j;
}
