-- Send every stable dark-blood LGE series to the scar service over STOW-RS
-- (through the DICOMweb plugin's client, server "dblge-scar" in orthanc.json).
--
-- A series is stable once Orthanc has received nothing new for it for
-- StableAge seconds. Only MR series whose description contains
-- LGE_SERIES_PATTERN (a Lua pattern, lower case; default "lge") are sent:
-- the service analyses DB-LGE short-axis stacks, not cines or T2 maps.
-- The SEG and SR the service stores back are not MR, so they are never
-- sent again. A series that failed to send can be re-sent from Orthanc
-- Explorer or with POST /dicom-web/servers/dblge-scar/stow.

local pattern = os.getenv('LGE_SERIES_PATTERN') or 'lge'

function OnStableSeries(seriesId, tags, metadata)
  if tags['Modality'] ~= 'MR' then
    return
  end
  local description = string.lower(tags['SeriesDescription'] or '')
  if pattern ~= '' and string.find(description, pattern) == nil then
    return
  end
  local request = { Resources = { seriesId }, Synchronous = true }
  local ok, answer = pcall(RestApiPost, '/dicom-web/servers/dblge-scar/stow',
                           DumpJson(request, true))
  if ok then
    print('dblge-scar: sent series ' .. seriesId)
  else
    print('dblge-scar: could not send series ' .. seriesId .. ': ' .. tostring(answer))
  end
end
