/*
 * commands.h - the passmill subcommands (a stable public CLI).
 *
 * Each takes argv with argv[0] = the subcommand name and returns the
 * process exit status:
 *   0  success
 *   1  finished, but something was rejected / failed verification
 *   2  usage or configuration error (message on stderr)
 *   3  runtime failure (I/O, crypto, store, broker)
 * Every command prints its usage for -h/--help on stdout and exits 0.
 */
#ifndef PM_CLI_COMMANDS_H
#define PM_CLI_COMMANDS_H

enum { PM_EXIT_OK = 0, PM_EXIT_REJECTS = 1, PM_EXIT_USAGE = 2, PM_EXIT_FAILURE = 3 };

int cmd_run(int argc, char **argv);        /* cmd_run.c */
int cmd_identity(int argc, char **argv);   /* cmd_identity.c: "identity create DIR" */
int cmd_sample(int argc, char **argv);     /* cmd_sample.c */
int cmd_verify(int argc, char **argv);     /* cmd_verify.c */
int cmd_devbroker(int argc, char **argv);  /* cmd_kafka.c */
int cmd_produce(int argc, char **argv);    /* cmd_kafka.c */
int cmd_show(int argc, char **argv);       /* cmd_registry.c */
int cmd_stats(int argc, char **argv);      /* cmd_registry.c */
int cmd_export(int argc, char **argv);     /* cmd_registry.c */
int cmd_url(int argc, char **argv);        /* cmd_registry.c */
int cmd_link(int argc, char **argv);       /* cmd_registry.c */
int cmd_serve(int argc, char **argv);      /* cmd_serve.c */
int cmd_get(int argc, char **argv);        /* cmd_get.c */
int cmd_void(int argc, char **argv);       /* cmd_lifecycle.c */
int cmd_expire(int argc, char **argv);     /* cmd_lifecycle.c */
int cmd_redeem(int argc, char **argv);     /* cmd_lifecycle.c */
int cmd_activate(int argc, char **argv);   /* cmd_lifecycle.c */
int cmd_reissue(int argc, char **argv);    /* cmd_lifecycle.c */
int cmd_templates(int argc, char **argv);  /* cmd_lifecycle.c */
int cmd_push(int argc, char **argv);       /* cmd_push.c */

#endif
