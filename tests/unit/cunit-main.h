/* cunit-main.h - the shared main() of every CUnit test program.
 *
 * A test file defines its suites and tests and one table:
 *
 *     static CU_TestInfo util_tests[] = {
 *         { "parse_size", test_parse_size },
 *         CU_TEST_INFO_NULL,
 *     };
 *     const CU_SuiteInfo unit_suites[] = {
 *         { .pName = "util", .pTests = util_tests },
 *         CU_SUITE_INFO_NULL,
 *     };
 *
 * Always designated initializers: CU_SuiteInfo has six fields in CUnit
 * 2.1-3 and positional initialisation puts pointers in the wrong ones.
 */
#ifndef BLOCKD_TESTS_CUNIT_MAIN_H
#define BLOCKD_TESTS_CUNIT_MAIN_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

extern const CU_SuiteInfo unit_suites[];

/* A fresh private temporary directory for this test program (removed
 * at exit with its contents). */
const char *unit_tmpdir(void);

#endif
