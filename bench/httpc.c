#include "bench/httpc.h"

#include <stdio.h>

void tb_http_thread(struct tb_wctx *w)
{
    snprintf(w->res->error, sizeof(w->res->error), "HTTP mode: not built yet");
    tb_wctx_ready(w);
}
