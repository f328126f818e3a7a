#include "kafka/kafka_conf.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/secret.h"

int pm_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, pm_error *err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        /* The value is not echoed: it may be a credential (sasl.password). */
        return pm_error_set(err, PM_ERR_CONFIG, "kafka.%s: %s", key, errstr);
    return 0;
}

/* "sasl.password_env" -> the secret property it names ("sasl.password") in out, or false. */
static bool secret_source(const char *key, const char *suffix, char *out, size_t outlen)
{
    size_t n = strlen(key), m = strlen(suffix);
    if (n <= m || n - m >= outlen || strcmp(key + n - m, suffix) != 0)
        return false;
    memcpy(out, key, n - m);
    out[n - m] = '\0';
    return pm_config_kafka_secret(out);
}

/*
 * One user property: a secret given as a value is refused (argv and config
 * files are not for credentials); "<secret>_env" and "<secret>_file" set the
 * secret from an environment variable or a file.  The value never appears
 * in a message.
 */
static int set_user_prop(rd_kafka_conf_t *conf, const pm_kv *kv, pm_error *err)
{
    char secret[64];
    if (pm_config_kafka_secret(kv->key))
        return pm_error_set(err, PM_ERR_CONFIG,
                            "kafka.%s is a secret and cannot be given as a value (command line "
                            "or config file): set kafka.%s_env = VARIABLE or kafka.%s_file = PATH",
                            kv->key, kv->key, kv->key);
    if (secret_source(kv->key, "_env", secret, sizeof secret)) {
        const char *v = getenv(kv->value);
        if (!v || !*v)
            return pm_error_set(err, PM_ERR_CONFIG,
                                "kafka.%s names the environment variable %s, which is %s",
                                kv->key, kv->value, v ? "empty" : "not set");
        return pm_kafka_conf_set(conf, secret, v, err);
    }
    if (secret_source(kv->key, "_file", secret, sizeof secret)) {
        char key[80];
        snprintf(key, sizeof key, "kafka.%s", kv->key);
        char *v = pm_secret_read_file(kv->value, key, err);
        if (!v)
            return -1;
        int rc = pm_kafka_conf_set(conf, secret, v, err);
        pm_secret_free(v);
        return rc;
    }
    return pm_kafka_conf_set(conf, kv->key, kv->value, err);
}

static int set_pairs(rd_kafka_conf_t *conf, const char *const *pairs, pm_error *err)
{
    for (size_t i = 0; pairs && pairs[i]; i += 2)
        if (pm_kafka_conf_set(conf, pairs[i], pairs[i + 1], err) != 0)
            return -1;
    return 0;
}

/*
 * librdkafka's log lines go to stderr with a passmill prefix.  The notice
 * that a consumer property is ignored by a producer (or the reverse) is
 * dropped: passmill gives both clients the one kafka.* namespace on purpose.
 */
static void log_line(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "will be ignored by this"))
        return;
    fprintf(stderr, "passmill: kafka: %s: %s\n", fac, buf);
}

rd_kafka_conf_t *pm_kafka_conf_new(const char *const *defaults, const char *brokers,
                                   const pm_kv *props, size_t n_props,
                                   const char *const *forced, pm_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_line);
    int rc = set_pairs(conf, defaults, err);
    if (rc == 0 && brokers && *brokers)
        rc = pm_kafka_conf_set(conf, "bootstrap.servers", brokers, err);
    for (size_t i = 0; rc == 0 && i < n_props; i++)
        rc = set_user_prop(conf, &props[i], err);
    if (rc == 0)
        rc = set_pairs(conf, forced, err);
    if (rc == 0) {
        size_t len = 0; /* the size with its NUL, asked without a buffer */
        if (rd_kafka_conf_get(conf, "bootstrap.servers", NULL, &len) != RD_KAFKA_CONF_OK ||
            len <= 1)
            rc = pm_error_set(err, PM_ERR_CONFIG,
                              "no Kafka brokers: set kafka.brokers (host:port[,host:port...])");
    }
    if (rc != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

const char *pm_kafka_prop(const pm_kv *props, size_t n_props, const char *key)
{
    for (size_t i = 0; i < n_props; i++)
        if (strcmp(props[i].key, key) == 0)
            return props[i].value;
    return NULL;
}

#ifdef __SANITIZE_THREAD__
/*
 * ThreadSanitizer builds only.  Debian's librdkafka is built on C11
 * <threads.h>, which TSan does not intercept: thrd_create()d threads have
 * no TSan state (they crash in their first malloc) and mtx_t/cnd_t
 * synchronisation is invisible (every hand-over looks like a race).  The
 * definitions below win over glibc's for librdkafka and route each call to
 * the intercepted pthread function.  In glibc mtx_t, cnd_t and thrd_t are
 * pthread_mutex_t, pthread_cond_t and pthread_t, and thrd_join/thrd_exit
 * carry the int result in pthread's void pointer, as here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

/*
 * librdkafka itself is not instrumented: its reference counts are atomics
 * TSan cannot see, so when one of its threads destroys an object another
 * one used (a topic's rwlock) TSan reports a race.  passmill uses no
 * rwlocks, so a race whose latest access is pthread_rwlock_destroy is
 * librdkafka's own bookkeeping.
 */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race_top:pthread_rwlock_destroy\n";
}

static int c11_result(int rc)
{
    switch (rc) {
    case 0: return thrd_success;
    case ETIMEDOUT: return thrd_timedout;
    case EBUSY: return thrd_busy;
    case ENOMEM: return thrd_nomem;
    default: return thrd_error;
    }
}

typedef struct c11_start {
    thrd_start_t fn;
    void *arg;
} c11_start;

static void *c11_trampoline(void *p)
{
    c11_start s = *(c11_start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    c11_start *s = malloc(sizeof *s);
    if (!s)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    pthread_t t;
    int rc = pthread_create(&t, NULL, c11_trampoline, s);
    if (rc != 0) {
        free(s);
        return c11_result(rc);
    }
    *thr = (thrd_t)t;
    return thrd_success;
}

int thrd_join(thrd_t thr, int *res)
{
    void *r;
    int rc = pthread_join((pthread_t)thr, &r);
    if (rc == 0 && res)
        *res = (int)(intptr_t)r;
    return c11_result(rc);
}

int thrd_detach(thrd_t thr) { return c11_result(pthread_detach((pthread_t)thr)); }

int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (type & mtx_recursive)
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init((pthread_mutex_t *)m, &a);
    pthread_mutexattr_destroy(&a);
    return c11_result(rc);
}

int mtx_lock(mtx_t *m) { return c11_result(pthread_mutex_lock((pthread_mutex_t *)m)); }
int mtx_trylock(mtx_t *m) { return c11_result(pthread_mutex_trylock((pthread_mutex_t *)m)); }
int mtx_unlock(mtx_t *m) { return c11_result(pthread_mutex_unlock((pthread_mutex_t *)m)); }
void mtx_destroy(mtx_t *m) { pthread_mutex_destroy((pthread_mutex_t *)m); }
int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    return c11_result(pthread_mutex_timedlock((pthread_mutex_t *)m, ts));
}

int cnd_init(cnd_t *c) { return c11_result(pthread_cond_init((pthread_cond_t *)c, NULL)); }
int cnd_signal(cnd_t *c) { return c11_result(pthread_cond_signal((pthread_cond_t *)c)); }
int cnd_broadcast(cnd_t *c) { return c11_result(pthread_cond_broadcast((pthread_cond_t *)c)); }
void cnd_destroy(cnd_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }
int cnd_wait(cnd_t *c, mtx_t *m)
{
    return c11_result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}
int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    return c11_result(pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts));
}
#endif
