/* unit-block.c - see unit-block.h. */
#include "unit-block.h"

#include <json-c/json.h>
#include <stdlib.h>

#include "cunit-main.h"

BlockNode *unit_open_json(BlockGraph *g, const char *json, Error **errp)
{
    json_object *obj = json_tokener_parse(json);
    BlockdevOptions *o = NULL;
    BlockNode *bs = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    if (qapi_parse_BlockdevOptions(obj, NULL, 0, &o, errp)) {
        bs = blk_open(g, o, errp);
        qapi_free_BlockdevOptions(o);
    }
    json_object_put(obj);
    return bs;
}

int unit_qemu_graph_init(BlockGraph **g)
{
    if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
        system("qemu-io --version >/dev/null 2>&1") != 0) {
        return 1;
    }
    *g = blk_graph_new(NULL);
    return 0;
}

int unit_graph_cleanup(BlockGraph **g)
{
    blk_graph_free(*g);
    *g = NULL;
    return 0;
}
