/*
 * wr.h: the umbrella header of warren's public API, and the export macro.
 *
 * A plugin includes <warren/wr.h> and nothing from core/src. Every name here starts with
 * wr_ / WR_. Each header also compiles alone.
 */
#ifndef WARREN_WR_H
#define WARREN_WR_H

#include "warren/export.h"
#include "warren/error.h"
#include "warren/log.h"
#include "warren/loop.h"
#include "warren/value.h"
#include "warren/container.h"
#include "warren/msg.h"
#include "warren/plugin.h"
#include "warren/exchange.h"
#include "warren/storage.h"
#include "warren/fsync.h"
#include "warren/recfile.h"
#include "warren/transport.h"
#include "warren/broker.h"
#include "warren/server.h"

#endif
