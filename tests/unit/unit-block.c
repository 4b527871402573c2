/* unit-block.c - see unit-block.h. */
#include "unit-block.h"

#include <json-c/json.h>

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
