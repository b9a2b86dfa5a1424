#include <librdkafka/rdkafka.h>
#include <dlfcn.h>
#include <string.h>
#include <stdio.h>

/*
 * Topic IDs (a topic's incarnation) come from DescribeTopics, which librdkafka added in 2.3.
 * The headers we compile against may be older (Debian ships 2.0.2), so the calls are looked
 * up at run time in the library actually loaded. Returns 0 and writes the base64 topic ID,
 * or -1 with a reason in errbuf.
 */
typedef void *(*pipectl_tc_of_names_fn)(const char **, size_t);
typedef void (*pipectl_tc_destroy_fn)(void *);
typedef void (*pipectl_describe_fn)(rd_kafka_t *, const void *, const rd_kafka_AdminOptions_t *, rd_kafka_queue_t *);
typedef const void *(*pipectl_event_result_fn)(rd_kafka_event_t *);
typedef const void **(*pipectl_result_topics_fn)(const void *, size_t *);
typedef const rd_kafka_error_t *(*pipectl_desc_error_fn)(const void *);
typedef const void *(*pipectl_desc_id_fn)(const void *);
typedef const char *(*pipectl_uuid_str_fn)(const void *);

static inline int pipectl_topic_id(rd_kafka_t *rk, const char *topic, int timeout_ms,
                                   char *out, size_t outlen, char *errbuf, size_t errlen) {
    pipectl_tc_of_names_fn of_names = (pipectl_tc_of_names_fn)dlsym(RTLD_DEFAULT, "rd_kafka_TopicCollection_of_topic_names");
    pipectl_tc_destroy_fn tc_destroy = (pipectl_tc_destroy_fn)dlsym(RTLD_DEFAULT, "rd_kafka_TopicCollection_destroy");
    pipectl_describe_fn describe = (pipectl_describe_fn)dlsym(RTLD_DEFAULT, "rd_kafka_DescribeTopics");
    pipectl_event_result_fn event_result = (pipectl_event_result_fn)dlsym(RTLD_DEFAULT, "rd_kafka_event_DescribeTopics_result");
    pipectl_result_topics_fn result_topics = (pipectl_result_topics_fn)dlsym(RTLD_DEFAULT, "rd_kafka_DescribeTopics_result_topics");
    pipectl_desc_error_fn desc_error = (pipectl_desc_error_fn)dlsym(RTLD_DEFAULT, "rd_kafka_TopicDescription_error");
    pipectl_desc_id_fn desc_id = (pipectl_desc_id_fn)dlsym(RTLD_DEFAULT, "rd_kafka_TopicDescription_topic_id");
    pipectl_uuid_str_fn uuid_str = (pipectl_uuid_str_fn)dlsym(RTLD_DEFAULT, "rd_kafka_Uuid_base64str");
    if (!of_names || !tc_destroy || !describe || !event_result || !result_topics || !desc_error || !desc_id || !uuid_str) {
        snprintf(errbuf, errlen, "the loaded librdkafka has no DescribeTopics (needs 2.3 or newer)");
        return -1;
    }
    const char *names[1] = { topic };
    void *tc = of_names(names, 1);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    describe(rk, tc, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms);
    int rc = -1;
    if (!ev) {
        snprintf(errbuf, errlen, "timed out describing topic");
    } else if (rd_kafka_event_error(ev)) {
        snprintf(errbuf, errlen, "%s", rd_kafka_event_error_string(ev));
    } else {
        const void *res = event_result(ev);
        size_t cnt = 0;
        const void **descs = res ? result_topics(res, &cnt) : NULL;
        if (!descs || cnt != 1) {
            snprintf(errbuf, errlen, "no description returned for the topic");
        } else {
            const rd_kafka_error_t *err = desc_error(descs[0]);
            if (err && rd_kafka_error_code(err)) {
                snprintf(errbuf, errlen, "%s", rd_kafka_error_string(err));
            } else {
                const void *id = desc_id(descs[0]);
                const char *s = id ? uuid_str(id) : NULL;
                if (!s) {
                    snprintf(errbuf, errlen, "the broker gave no topic ID");
                } else {
                    snprintf(out, outlen, "%s", s);
                    rc = 0;
                }
            }
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    tc_destroy(tc);
    return rc;
}

/* Variadic rd_kafka_producev is not callable from Swift; this is the one form we need. */
static inline rd_kafka_resp_err_t pipectl_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                                                   const void *value, size_t len,
                                                   const void *key, size_t keylen, void *opaque) {
    return rd_kafka_producev(rk,
                             RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_VALUE((void *)value, len),
                             RD_KAFKA_V_KEY(key, keylen),
                             RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_END);
}
