/* SPDX-License-Identifier: BSD-2-Clause */
#include "shm/status.h"

#include <criterion/criterion.h>
#include <string.h>

Test(status, every_code_has_text_and_name)
{
    for (int s = TC_STATUS_MIN; s <= TC_EINPROGRESS; s++) {
        const char *text = tc_strerror((enum tc_status)s);
        const char *name = tc_status_name((enum tc_status)s);
        cr_assert_str_neq(text, "unknown status", "code %d has no text", s);
        cr_assert_str_neq(name, "TC_?", "code %d has no name", s);
        for (int o = TC_STATUS_MIN; o < s; o++) {
            cr_assert_str_neq(text, tc_strerror((enum tc_status)o), "codes %d and %d share text", s,
                              o);
        }
    }
}

Test(status, unknown_code_is_named_unknown)
{
    cr_assert_str_eq(tc_strerror((enum tc_status) - 999), "unknown status");
    cr_assert_str_eq(tc_status_name((enum tc_status)42), "TC_?");
}
