/* cunit-main.c - see cunit-main.h.  Exit status: 0 when every test
 * passed, 1 otherwise (meson counts the program as one test). */
#include "cunit-main.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[4096];

static void remove_tmpdir(void)
{
    char cmd[4200];

    if (tmpdir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", tmpdir);
        }
    }
}

const char *unit_tmpdir(void)
{
    if (tmpdir[0] == '\0') {
        const char *base = getenv("BLOCKD_TEST_TMPDIR");
        if (base == NULL) {
            base = "/tmp";
        }
        snprintf(tmpdir, sizeof(tmpdir), "%s/unit-XXXXXX", base);
        if (mkdtemp(tmpdir) == NULL) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

int main(void)
{
    unsigned failed;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return 1;
    }
    /* CU_register_suites takes a non-const array in CUnit 2.1-3. */
    if (CU_register_suites((CU_SuiteInfo *)unit_suites) != CUE_SUCCESS) {
        fprintf(stderr, "CU_register_suites: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    failed += CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
