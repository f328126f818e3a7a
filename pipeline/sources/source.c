/* source.c - picking a source implementation from the config. */
#include "sources/source.h"

#include <string.h>

int pm_source_open(const pm_config *cfg, pm_source **out, pm_error *err)
{
    if (strcmp(cfg->input_type, "file") == 0)
        return pm_source_file_open(cfg->input_path, cfg->input_format, out, err);
    if (strcmp(cfg->input_type, "kafka") == 0)
        return pm_source_kafka_open(cfg, out, err);
    return pm_error_set(err, PM_ERR_CONFIG, "input.type: expected file or kafka, got '%s'",
                        cfg->input_type);
}

void pm_source_close(pm_source *s)
{
    if (s)
        s->ops->close(s);
}
